"""Operations tooling, apart from the serving path: the image self-check, the deployed-endpoint
test and the safety-classifier evaluation. Nothing on the request path imports from here."""
