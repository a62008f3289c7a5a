"""RunPod Hub entry point: the Hub's publishing guide looks for a handler.py here.

The worker itself lives in the ben2_worker package (installed in the image); this only starts it."""

from ben2_worker.handler import start

if __name__ == "__main__":
    start()
