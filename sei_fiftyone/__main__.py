"""``python -m sei_fiftyone install-plugin | demo``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sei_fiftyone", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install-plugin", help="link the @sei/fiftyone App plugin into FIFTYONE_PLUGINS_DIR")
    p.add_argument("--plugins-dir", default=None, help="default: FIFTYONE_PLUGINS_DIR or fo.config.plugins_dir")
    p.add_argument("--copy", action="store_true", help="copy the files instead of a symlink")
    sub.add_parser("check-db", help="show the mongod FiftyOne will use here, or how to get one")
    d = sub.add_parser("demo", help="find mislabeled images in a bundled CIFAR-10N sample, offline")
    from sei_fiftyone.demo import add_arguments

    add_arguments(d)
    args = parser.parse_args(argv)
    if args.command == "install-plugin":
        from sei_fiftyone.plugin import install_plugin

        dest = install_plugin(args.plugins_dir, copy=args.copy)
        print(f"@sei/fiftyone installed at {dest}")
        return 0
    if args.command == "check-db":
        import os
        import subprocess

        from sei_fiftyone.db import find_mongod

        if os.environ.get("FIFTYONE_DATABASE_URI"):
            print(f"FIFTYONE_DATABASE_URI is set: FiftyOne uses {os.environ['FIFTYONE_DATABASE_URI']}")
        try:
            mongod = find_mongod()
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        version = subprocess.run([str(mongod), "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        print(f"mongod: {mongod} ({version})")
        return 0
    from sei_fiftyone.demo import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
