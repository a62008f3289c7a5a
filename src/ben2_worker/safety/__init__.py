"""The safety stack: captions, nudity detection, the LLM classifier and the gate."""
