from setuptools import find_packages, setup

with open("README.md") as f:
    long_description = f.read()

setup(
    name="distributed3",
    version="0.1.0",
    description="Distributed computing with data locality: a center, peer workers and a Pool",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["distributed3", "distributed3.*"]),
    python_requires=">=3.11",
    install_requires=["tornado>=6.2", "cloudpickle>=3.0", "numpy>=1.24", "toolz>=0.12"],
    extras_require={
        "progress": ["tqdm>=4.60"],
        # pool.get as dask's scheduler, pool.compute and pool.persist of dask collections
        # (2025.4: the expressions dask.compute hands a scheduler)
        "dask": ["dask[array]>=2025.4"],
        # the joblib backend (distributed3.joblib): 1.5 gives backends submit()
        "joblib": ["joblib>=1.5"],
        # the peers that `python -m distributed3.bench` compares with, when installed
        # (dask[dataframe]: ray's dask scheduler imports dask.dataframe)
        "bench": ["dask[distributed,dataframe]>=2025.4", "ray>=2.9"],
        "test": ["pytest>=7", "pytest-timeout>=2.1", "psutil>=5.9", "hypothesis>=6", "trustme>=1.0",
                 "tqdm>=4.60", "dask[array]>=2025.4", "joblib>=1.5"],
    },
    entry_points={
        "console_scripts": [
            "dcenter=distributed3.deploy.cli:dcenter",
            "dworker=distributed3.deploy.worker_cli:dworker",
        ]
    },
    scripts=[],
    license="BSD-3-Clause",
)
