"""Packaging for ovseg. Kept declarative: no torch import, no version checks at install time."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="ovseg",
    version="0.1.0",
    description="Open-vocabulary semantic, instance and panoptic segmentation (FC-CLIP design) in pure PyTorch",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["ovseg", "ovseg.*"]),
    package_data={
        "ovseg": [
            "text/builtin/*.txt",
            "text/builtin/*.json",
            "text/builtin/LICENSE-*",
            "zoo/*.yaml",
            "configs/**/*.yaml",
            "models/backbones/clip_configs/*.json",
        ]
    },
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "open_clip_torch>=2.24",
        "timm>=0.9",
        # albumentations depends on the headless OpenCV build; depending on opencv-python as well
        # would install two copies of cv2 that overwrite each other.
        "opencv-python-headless>=4.8",
        "albumentations>=1.4",
        "pycocotools>=2.0.7",
        "numpy",
        "scipy",
        "pillow",
        "omegaconf>=2.4",
        "pyyaml",
        "tqdm",
        "tensorboard",
        # OVCamo's class-aware saliency metrics (S-, E-, weighted F-measure), as its evaluator
        "pysodmetrics>=1.4.2",
        # models from and to the Hugging Face Hub (hf:// zoo entries), the zoo's file lock
        "huggingface_hub>=0.23",
        "safetensors>=0.4",
        "filelock>=3.12",
    ],
    extras_require={
        # cityscapesscripts: the official Cityscapes evaluator, the tests' reference for ours
        "dev": ["pytest>=7", "pytest-timeout", "ruff", "cityscapesscripts", "playwright>=1.40"],
        # tools/export.py and Segmenter.from_pretrained(EXPORT_DIR); onnxruntime-gpu for CUDA
        "export": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.5"],
        # demo/app.py: the Gradio web app and its /segment API
        "app": ["gradio>=4", "gradio_client"],
        # tools/label.py --backend ray
        "ray": ["ray[data]>=2.9"],
    },
    entry_points={
        "console_scripts": [
            "ovseg-demo=ovseg.cli.demo:main",
            "ovseg-train=ovseg.cli.train:main",
            "ovseg-test=ovseg.cli.test:main",
            "ovseg-zoo=ovseg.zoo.cli:main",
            "ovseg-benchmark=ovseg.cli.benchmark:main",
            "ovseg-export=ovseg.cli.export:main",
            "ovseg-convert-fcclip=ovseg.cli.convert_fcclip:main",
            "ovseg-publish-model=ovseg.cli.publish_model:main",
            "ovseg-prepare-data=ovseg.cli.prepare_data:main",
            "ovseg-label=ovseg.cli.label:main",
            "ovseg-describe-classes=ovseg.cli.describe_classes:main",
        ]
    },
)
