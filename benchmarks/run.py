"""distributed3 against multiprocessing, concurrent.futures, dask and ray, in one run.

The same as ``python -m distributed3.bench``; see that module for what it measures.

Run:  python benchmarks/run.py [--quick] [--systems distributed3,dask] [--scaling 16,32,64]
"""
from distributed3.bench import main

if __name__ == "__main__":
    main()
