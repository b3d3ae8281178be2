"""``python -m distributed3 center|worker [options]``: the same as ``dcenter`` and
``dworker``, for where the scripts are not on the PATH; ``python -m distributed3
version`` prints what this process runs (as ``Pool.get_versions`` compares).
"""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["version"]:
        from .versions import versions

        for name, version in versions().items():
            print(f"{name} {version}")
        return
    if not argv or argv[0] not in ("center", "worker"):
        sys.exit("usage: python -m distributed3 {center,worker,version} [options]")
    from .deploy.cli import main as run

    run(argv)


if __name__ == "__main__":
    main()
