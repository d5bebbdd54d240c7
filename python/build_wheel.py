"""Builds the sqlite-walrust wheel: the extension, the `walrust` command and the small
`sqlite_walrust` module, as a platform wheel for this machine. Standard library only (a wheel
is a zip with a few metadata files, PEP 427), so `make wheel` needs nothing installed.

    python3 python/build_wheel.py --ext target/release/libwalrust.so \
        --cli target/release/walrust --out dist
"""

import argparse
import base64
import hashlib
import os
import re
import sys
import sysconfig
import zipfile
from pathlib import Path

NAME = "sqlite_walrust"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def cargo_version():
    text = (ROOT / "Cargo.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def platform_tag():
    return re.sub(r"[-.]", "_", sysconfig.get_platform())


def record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def metadata(version):
    readme = (ROOT / "README.md").read_text()
    return (
        "Metadata-Version: 2.1\n"
        "Name: sqlite-walrust\n"
        f"Version: {version}\n"
        "Summary: Continuous replication of SQLite to S3-compatible storage "
        "(Litestream 0.5 compatible), as a SQLite extension\n"
        "Requires-Python: >=3.8\n"
        "Description-Content-Type: text/markdown\n"
        "\n" + readme
    )


def build(ext, cli, out):
    version = cargo_version()
    tag = f"py3-none-{platform_tag()}"
    info = f"{NAME}-{version}.dist-info"
    data = f"{NAME}-{version}.data"
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    files = [
        (f"{NAME}/__init__.py", (HERE / NAME / "__init__.py").read_bytes(), 0o644),
        (f"{NAME}/libwalrust{suffix}", Path(ext).read_bytes(), 0o755),
        (f"{data}/scripts/walrust", Path(cli).read_bytes(), 0o755),
        (f"{info}/METADATA", metadata(version).encode(), 0o644),
        (
            f"{info}/WHEEL",
            f"Wheel-Version: 1.0\nGenerator: walrust build_wheel.py\nRoot-Is-Purelib: false\n"
            f"Tag: {tag}\n".encode(),
            0o644,
        ),
    ]
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{NAME}-{version}-{tag}.whl"
    records = [record_line(name, body) for name, body, _ in files]
    records.append(f"{info}/RECORD,,")
    files.append((f"{info}/RECORD", ("\n".join(records) + "\n").encode(), 0o644))
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body, mode in files:
            entry = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            entry.external_attr = (0o100000 | mode) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(entry, body)
    return wheel


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ext", required=True, help="the built libwalrust.so (or .dylib)")
    parser.add_argument("--cli", required=True, help="the built walrust command")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="where the wheel goes")
    args = parser.parse_args()
    for path in (args.ext, args.cli):
        if not Path(path).is_file():
            sys.exit(f"build_wheel: {path} does not exist; run `cargo build --release` first")
    print(build(args.ext, args.cli, Path(args.out)))


if __name__ == "__main__":
    main()
