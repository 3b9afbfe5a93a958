"""Does a set of carried wheels install on the GPU machine? (issue #26's unsloth side by side)

The GPU machine has no network: what its image lacks travels as wheels, installed there with
``pip install --no-index --no-deps`` (docs/benchmarks.md). ``--no-deps`` checks nothing, so this
module does what pip's resolver would: every ``Requires-Dist`` of every carried wheel (markers
evaluated for the machine: CPython 3.12 on Linux x86_64; extras left out) must be met by another
carried wheel or by a package the machine has, at a version its specifier allows; and each name
may be carried once (two versions stop the whole install).

What the machine has comes either from a list (``--image FILE``: one package a line, ``name`` or
``name==version``; a name without a version is taken as present at an unknown version and reported
as assumed) or, run on the machine itself, from its installed distributions (``--installed``).
Names that are deliberately not carried (an optional import that no wheel can bring there) are
read from the wheel list's ``# not carried: NAME reason`` lines and reported, not counted as errors.

    python3 -m benchmarks.wheel_set .whl_unsloth_a .whl_unsloth_b --image benchmarks/gpu_image_packages.txt \
        --wheel-list benchmarks/unsloth_wheels.txt --max-group-mib 58
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

# The GPU machine's interpreter (KINDS.md: Python 3.12.3, x86-64 Linux), for evaluating markers.
TARGET_ENVIRONMENT = {
    "implementation_name": "cpython",
    "implementation_version": "3.12.3",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": "3.12.3",
    "python_version": "3.12",
    "sys_platform": "linux",
    "extra": "",
}

NOT_CARRIED_PREFIX = "# not carried:"


@dataclass
class Wheel:
    """One wheel file: its distribution name (canonical), version, size and requirements."""

    name: str
    version: str
    path: Path
    size: int
    requires: list[Requirement] = field(default_factory=list)


@dataclass
class Report:
    """What a check found: ``problems`` (the install would fail or import the wrong thing),
    ``assumed`` (met by a name the machine has at a version not known here) and ``not_carried``
    (requirements left out on purpose, with the reason)."""

    problems: list[str] = field(default_factory=list)
    assumed: list[str] = field(default_factory=list)
    not_carried: list[str] = field(default_factory=list)


def read_wheel(path: str | Path) -> Wheel:
    """Name, version and ``Requires-Dist`` lines of a wheel, from its ``*.dist-info/METADATA``."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        meta = next((n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise ValueError(f"{path.name} has no .dist-info/METADATA: not a wheel")
        headers = HeaderParser().parsestr(zf.read(meta).decode("utf-8"))
    return Wheel(
        name=canonicalize_name(headers["Name"]),
        version=headers["Version"],
        path=path,
        size=path.stat().st_size,
        requires=[Requirement(r) for r in headers.get_all("Requires-Dist") or []],
    )


def read_package_list(path: str | Path) -> dict[str, str | None]:
    """A package list (``name`` or ``name==version`` a line; ``#`` starts a comment) as
    canonical name -> version (None: present, version unknown)."""
    out: dict[str, str | None] = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonicalize_name(name.strip())] = version.strip() or None
    return out


def read_not_carried(path: str | Path) -> dict[str, str]:
    """The ``# not carried: NAME reason`` lines of a wheel list, as canonical name -> reason."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith(NOT_CARRIED_PREFIX):
            name, _, reason = line[len(NOT_CARRIED_PREFIX) :].strip().partition(" ")
            out[canonicalize_name(name)] = reason.strip()
    return out


def installed_packages() -> dict[str, str | None]:
    """The distributions this Python has (name -> version): run on the GPU machine, its image."""
    from importlib.metadata import distributions

    return {canonicalize_name(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"]}


def applies(req: Requirement, environment: Mapping[str, str] = TARGET_ENVIRONMENT) -> bool:
    """Whether ``req`` is a requirement on the target machine (its marker, with no extra asked for)."""
    return req.marker is None or req.marker.evaluate(dict(environment))


def _allows(req: Requirement, version: str) -> bool:
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def check(
    wheels: Iterable[Wheel],
    image: Mapping[str, str | None],
    not_carried: Mapping[str, str] | None = None,
    environment: Mapping[str, str] = TARGET_ENVIRONMENT,
) -> Report:
    """Every requirement of every wheel against the carried set (which is installed over the image,
    so a carried name shadows the image's) and the image; see the module docstring."""
    wheels = list(wheels)
    not_carried = dict(not_carried or {})
    report = Report()
    carried: dict[str, Wheel] = {}
    for w in wheels:
        if w.name in carried and carried[w.name].version != w.version:
            report.problems.append(
                f"{w.name}: two versions carried ({carried[w.name].path.name}, {w.path.name}): keep one"
            )
        carried.setdefault(w.name, w)
    for w in wheels:
        for req in w.requires:
            if not applies(req, environment):
                continue
            name = canonicalize_name(req.name)
            who = f"{w.name} {w.version} needs {req}"
            if name in carried:
                if not _allows(req, carried[name].version):
                    report.problems.append(f"{who}; carried is {carried[name].version}")
            elif name in image:
                version = image[name]
                if version is None:
                    report.assumed.append(f"{who}; the image has {name} (version not known here)")
                elif not _allows(req, version):
                    report.problems.append(f"{who}; the image has {version}: carry a wheel that fits")
            elif name in not_carried:
                report.not_carried.append(f"{who}; not carried: {not_carried[name]}")
            else:
                report.problems.append(f"{who}; neither carried nor in the image")
    report.assumed = sorted(set(report.assumed))
    report.not_carried = sorted(set(report.not_carried))
    return report


def group_sizes(folders: Iterable[str | Path]) -> dict[str, int]:
    """Bytes of the wheels in each folder (what one device call carries)."""
    return {str(f): sum(p.stat().st_size for p in Path(f).glob("*.whl")) for f in folders}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="folders of carried wheels (one per device call)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", metavar="FILE", help="the GPU image's package list (name or name==version a line)")
    source.add_argument("--installed", action="store_true", help="check against this Python's installed packages")
    parser.add_argument("--wheel-list", metavar="FILE", help="the wheel list, for its '# not carried:' lines")
    parser.add_argument("--max-group-mib", type=float, help="each folder's wheels must total less than this")
    args = parser.parse_args(argv)

    folders = [Path(f) for f in args.folders]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        print(f"error: no wheel folder {', '.join(missing)}. Fix: download the wheels first (docs/benchmarks.md)")
        return 2
    wheels = [read_wheel(p) for f in folders for p in sorted(f.glob("*.whl"))]
    image = installed_packages() if args.installed else read_package_list(args.image)
    report = check(wheels, image, read_not_carried(args.wheel_list) if args.wheel_list else None)
    for folder, size in group_sizes(folders).items():
        too_big = args.max_group_mib is not None and size >= args.max_group_mib * 2**20
        if too_big:
            report.problems.append(f"{folder}: {size / 2**20:.1f} MiB, not under {args.max_group_mib:g} MiB")
        print(f"{folder}: {len(list(Path(folder).glob('*.whl')))} wheels, {size / 2**20:.1f} MiB")
    for line in report.assumed:
        print(f"assumed: {line}")
    for line in report.not_carried:
        print(f"not carried: {line}")
    for line in report.problems:
        print(f"problem: {line}")
    print(f"{len(wheels)} wheels: {len(report.problems)} problems, {len(report.assumed)} assumed from the image")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
