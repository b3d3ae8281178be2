"""The quick start: an embedded local cluster, a map that stays on the workers, a sum.

Run:  python examples/quickstart.py
"""
from distributed3 import Pool


def main():
    with Pool() as pool:  # a center and one worker process per core, on loopback
        print("workers:", pool.available_cores)
        A = pool.map(lambda x: x**2, range(10))  # results stay on the workers
        B = pool.map(lambda x: -x, A)  # each task runs where its input lives
        total = pool.apply(sum, [B])  # runs where most of B is, pulls the rest
        print("sum:", total.get())
        print("A:", pool.gather(A))
        print("bytes moved between workers:",
              sum(i["peer_bytes_in"] for i in pool.worker_info().values()))


if __name__ == "__main__":
    main()
