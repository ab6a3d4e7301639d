"""emdet: detectron2 for electron-microscopy images. Set-up: see README.md (tools/bootstrap.py)."""
from setuptools import find_packages, setup

setup(
    name="emdet",
    version="0.1.0",
    description="Detectron2 toolkit for electron-microscopy images: train, measure, report.",
    python_requires=">=3.10",
    packages=find_packages(include=["emdet", "emdet.*"]),
    package_data={"emdet": ["py.typed", "model_zoo/*.json", "model_zoo/*.safetensors",
                            "napari/napari.yaml"]},
    entry_points={"napari.manifest": ["emdet = emdet.napari:napari.yaml"]},
    install_requires=[
        # torch/torchvision: any pair that loads together; tools/bootstrap.py pins one
        # (constraints.txt). detectron2 is installed by emdet/compat/install_detectron2.py.
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.24",
        "pillow>=9",
        "opencv-python-headless>=4.8",
        "pycocotools>=2.0.7",
        "shapely>=2.0",
        "scipy>=1.10",
        "scikit-image>=0.21",
        "pandas>=2.0",
        "matplotlib>=3.7",
        "tifffile>=2023.1",
        "imagecodecs>=2023.1",
        "mrcfile>=1.4",
        "rosettasciio>=0.4",
        "h5py>=3.8",  # EMD (Velox, NCEM) files
        "sparse>=0.15",  # Velox EMD spectrum-image files: rosettasciio needs it to read their images
        "pyyaml>=6",
        "tqdm>=4.60",
        "optuna>=3.6",  # tools/tune_net.py
        "safetensors>=0.4",  # weights files that cannot carry code (emdet.engine.weights)
        # detectron2 0.6's own pure-Python dependencies (its setup.py cannot run without C++).
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "yacs>=0.1.8",
        "termcolor>=1.1",
        "tabulate",
        "cloudpickle",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
    ],
    extras_require={
        # shared tuning studies on a PostgreSQL server (tools/tune_net.py --storage postgresql://)
        "postgres": ["psycopg2-binary>=2.9"],
        # the napari plugin (emdet/napari): reader, model widget, statistics widget
        "napari": ["napari[pyqt6]>=0.5"],
        "dev": ["pytest>=7", "pytest-timeout>=2.1", "ruff>=0.4", "psycopg2-binary>=2.9",
                "napari[pyqt6]>=0.5"],
    },
)
