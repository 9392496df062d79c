"""A Hugging Face Space's entry point: copy this folder (app.py, requirements.txt, README.md) into a
Gradio Space. It serves ovseg's web app (ovseg/app) for the model in $OVSEG_MODEL (a Space
variable: hf://OWNER/REPO[@REVISION], a zoo name, ...) on the address and port the Space expects."""

import os
import sys

from ovseg.cli.app import main

if __name__ == "__main__":
    model = os.environ.get("OVSEG_MODEL", "fcclip-convnext-large-coco")
    host = os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0")
    port = os.environ.get("GRADIO_SERVER_PORT", "7860")
    sys.exit(main(["--model", model, "--host", host, "--port", port, "--examples", "examples"]))
