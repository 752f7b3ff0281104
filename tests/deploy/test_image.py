"""deploy/Dockerfile, really built with podman and run: MPI ranks in the image, a short
`mpinet train` on the real MNIST mounted read-only, `mpinet eval` of its checkpoint, and
mpirun over ssh between containers (the MPIJob's layout).

The image is built FROM a Debian base made here with mmdebstrap (python3, python3-venv; the
mirror is the one this machine's apt sources name), built once per machine and kept as
localhost/mpinet-base:<suite>-<hash of its recipe>. The build context is the checkout as git
sees it, read without touching the repository: the files `git ls-files --cached --others
--exclude-standard` lists, as they are in the working tree (HEAD plus uncommitted changes
and new files that .gitignore does not ignore; on a fresh clone exactly HEAD). `git stash
create` would miss the new files. Needs root (mmdebstrap and rootful podman), podman, runc
and mmdebstrap (`apt-get install podman buildah runc mmdebstrap`); skips without them.

What this kind of machine needs from podman is generated at test time (nothing under /etc is
touched): runc rather than crun, cgroupfs, and ulimits no larger than the hard limits here,
in a containers.conf that CONTAINERS_CONF points to. The host's CA bundle and pip settings
are mounted into the build's RUN steps only (HTTPS may pass an intercepting proxy); none of
it ends up in the image.
"""

import configparser
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from support import REPO

pytestmark = pytest.mark.slow

IMAGE = "localhost/mpinet:test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Debian's docker-clean (as in the official images): no .deb files, no pkgcache.bin and
# srcpkgcache.bin left behind by apt (78 MB), no translations. As --aptopt, mmdebstrap uses it
# itself and writes it to the image's /etc/apt/apt.conf.d/99mmdebstrap.
CLEAN = (
    "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb "
    "/var/cache/apt/*.bin || true"
)
APT_OPTIONS = (
    f'DPkg::Post-Invoke {{ "{CLEAN}"; }}',
    f'APT::Update::Post-Invoke {{ "{CLEAN}"; }}',
    'Dir::Cache::pkgcache ""',
    'Dir::Cache::srcpkgcache ""',
    'Acquire::Languages "none"',
)
BASE_PACKAGES = "python3,python3-venv,ca-certificates"


def timed(name, started):
    print(f"{name}: {time.monotonic() - started:.1f} s")  # shown with pytest -s


# --- the host's settings, read at test time ----------------------------------------------------


def os_release():
    fields = {}
    for path in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        if path.exists():
            for line in path.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key] = value.strip().strip("\"'")
            break
    return fields


def apt_sources(suite, root=Path("/etc/apt")):
    """`deb URI SUITE COMPONENTS` lines of this machine's enabled apt sources for `suite`
    and its -updates/-security: both the one-line (.list) and deb822 (.sources) formats."""
    entries = []  # (uri, suite, components)
    lists = [root / "sources.list", *sorted((root / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                entries.append((line[1], line[2], line[3:]))
    for path in sorted((root / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields, key = {}, None
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0].isspace() and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                for each in fields.get("suites", "").split():
                    entries.append((uri, each, fields.get("components", "").split()))
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    lines = []
    for uri, each, components in entries:
        line = f"deb {uri} {each} {' '.join(components or ['main'])}"
        if each in wanted and line not in lines:
            lines.append(line)
    return lines


def pip_settings():
    """This machine's pip settings ({section: {key: value}}), the environment's PIP_* winning
    over the files, as `pip config list` shows them."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    from_files, from_env = {}, {}
    for line in done.stdout.splitlines():
        match = re.fullmatch(r"(:env:|[\w-]+)\.([\w-]+)='(.*)'", line.strip())
        if not match:
            continue
        section, key, value = match.groups()
        if section == ":env:":
            from_env[key] = value
        else:
            from_files.setdefault(section, {})[key] = value
    merged = from_files
    merged.setdefault("global", {}).update(from_env)
    return merged


def build_pip_config(settings, stage):
    """pip's settings for the build, in stage/pip.conf: every host file or folder they name
    (cert, constraint, find-links, a file:// index and the folder above its simple/, where
    its links lead) is mounted read-only at /mnt/host/<its path>, and the settings say so.
    stage is mounted at /mnt and holds the mount points: the build makes none in the image.
    Returns the --volume options."""
    mounts = {}  # the host paths to mount, in order (a dict as an ordered set)

    def moved(token, key):
        url = token.startswith("file://")
        path = urllib.parse.unquote(urllib.parse.urlsplit(token).path) if url else token
        if not path.startswith("/") or not Path(path).exists():
            return token
        if Path(path) == CA_BUNDLE:
            return token  # mounted at its own place (below)
        root = Path(path).parent if url and key in ("index-url", "extra-index-url") else Path(path)
        mounts[root] = None
        return ("file://" if url else "") + "/mnt/host" + path

    config = configparser.ConfigParser(interpolation=None)
    for section, values in settings.items():
        config[section] = {
            key: " ".join(moved(token, key) for token in value.split())
            for key, value in values.items()
        }
    with (stage / "pip.conf").open("w") as f:
        config.write(f)
    volumes = [f"--volume={stage}:/mnt:ro"]
    for root in mounts:
        if any(other in root.parents for other in mounts):
            continue  # inside another mount
        placeholder = stage / "host" / root.relative_to("/")
        if root.is_dir():
            placeholder.mkdir(parents=True, exist_ok=True)
        else:
            placeholder.parent.mkdir(parents=True, exist_ok=True)
            placeholder.touch()
        volumes.append(f"--volume={root}:/mnt/host{root}:ro")
    if CA_BUNDLE.is_file():  # the base has its own: mounted over it, the image keeps its own
        volumes.append(f"--volume={CA_BUNDLE}:{CA_BUNDLE}:ro")
    return volumes


# --- podman ------------------------------------------------------------------------------------


def containers_conf(path):
    """runc (crun refuses this machine's hybrid cgroups), cgroupfs, and default ulimits no
    larger than the hard limits here (podman's defaults are larger and refused)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(32768, nproc)
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}", "nproc={nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
    )
    return path


class Podman:
    def __init__(self, conf):
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args, timeout, check=True, **kwargs):
        done = subprocess.run(
            ["podman", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            **kwargs,
        )
        if check:
            assert done.returncode == 0, f"podman {' '.join(args)}\n{done.stdout}{done.stderr}"
        return done

    def image_id(self, name):
        done = self("image", "inspect", "--format", "{{.Id}}", name, timeout=60, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def run(self, *args, timeout):
        """`podman run --rm` of IMAGE without a network; the container is removed even when
        the command outlives its timeout."""
        name = f"mpinet-test-{uuid.uuid4().hex[:12]}"
        try:
            return self(
                "run",
                "--rm",
                "--name",
                name,
                "--network",
                "none",
                *args,
                timeout=timeout,
                check=False,
            )
        finally:
            self("rm", "--force", "--ignore", name, timeout=60, check=False)


@pytest.fixture(scope="session")
def podman(tmp_path_factory):
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"IMAGE TESTS SKIPPED: {', '.join(missing)} not on PATH; install the Debian "
            f"packages: apt-get install -y podman buildah runc mmdebstrap"
        )
    if os.geteuid() != 0:
        pytest.skip("IMAGE TESTS SKIPPED: they need root (mmdebstrap and rootful podman)")
    conf = containers_conf(tmp_path_factory.mktemp("podman") / "containers.conf")
    found = Podman(conf)
    info = found("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=120, check=False)
    if info.returncode != 0:
        pytest.skip(f"IMAGE TESTS SKIPPED: `podman info` fails here: {info.stderr.strip()}")
    return found


@pytest.fixture(scope="session")
def base_image(podman, tmp_path_factory):
    """The Debian base, made once per machine (reused while its recipe is the same)."""
    suite = os_release().get("VERSION_CODENAME")
    if os_release().get("ID") != "debian" or not suite:
        pytest.skip("IMAGE TESTS SKIPPED: the base is built with this machine's Debian mirror")
    mirrors = apt_sources(suite)
    if not mirrors:
        pytest.skip(f"IMAGE TESTS SKIPPED: no apt source for {suite} in /etc/apt")
    recipe = [
        "--variant=minbase",
        f"--include={BASE_PACKAGES}",
        *(f"--aptopt={option}" for option in APT_OPTIONS),
        suite,
    ]
    digest = hashlib.sha256("\0".join(recipe).encode()).hexdigest()[:12]
    tag = f"localhost/mpinet-base:{suite}-{digest}"
    if podman.image_id(tag):
        return tag
    started = time.monotonic()
    tar = tmp_path_factory.mktemp("base") / "base.tar"
    try:
        done = subprocess.run(
            ["mmdebstrap", "--quiet", *recipe, str(tar), *mirrors],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"mmdebstrap failed:\n{done.stderr[-4000:]}"
        podman(
            "import",
            "--quiet",
            "--change",
            f"ENV=PATH={STD_PATH}",
            "--change",
            "CMD=/bin/bash",
            str(tar),
            tag,
            timeout=300,
        )
    finally:
        tar.unlink(missing_ok=True)
    timed("base image built", started)
    return tag


def build_context(into):
    """The checkout as git sees it: the files of HEAD as they are now in the working tree,
    plus untracked files that .gitignore does not ignore (a fresh clone: exactly HEAD)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("IMAGE TESTS SKIPPED: the image is built from the files of a git checkout")
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    names = sorted({name for name in listed.decode().split("\0") if name})
    for name in names:
        if (REPO / name).is_file():  # not deleted in the working tree
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, into / name)
    changed = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return "HEAD" if not changed.strip() else "HEAD plus the working tree's changes"


@pytest.fixture(scope="session")
def image(podman, base_image, tmp_path_factory):
    """deploy/Dockerfile built FROM the base; the build's RUN steps see the host's CA bundle
    and pip settings (mounted read-only, not copied)."""
    work = tmp_path_factory.mktemp("build")
    context = work / "context"
    commit = build_context(context)
    print(f"image built from {commit}")
    stage = work / "mnt"
    stage.mkdir()
    volumes = build_pip_config(pip_settings(), stage)
    before = podman.image_id(IMAGE)
    started = time.monotonic()
    podman(
        "build",
        "--layers",
        "--file",
        str(context / "deploy" / "Dockerfile"),
        "--tag",
        IMAGE,
        "--build-arg",
        f"BASE={base_image}",
        "--build-arg",
        "PIP_CONFIG_FILE=/mnt/pip.conf",
        *volumes,
        str(context),
        timeout=900,
    )
    timed("project image built", started)
    after = podman.image_id(IMAGE)
    if before and before != after:  # the previous build's image, now untagged
        podman("rmi", before, timeout=120, check=False)
    return IMAGE


def test_the_image_runs_as_mpiuser_and_keeps_nothing_of_the_build(podman, image):
    """The venv on PATH, uid 1000, sshd's config; no wheel, no pip settings, no mount point
    of the build's volumes (/mnt stays empty)."""
    script = (
        "id -u; command -v mpinet; command -v mpirun; mpinet --version; ls -A /mnt; "
        "ls -d /etc/pip.conf /wheels /opt/* 2>/dev/null; test -f .sshd_config && echo sshd"
    )
    done = podman.run(image, "sh", "-c", script, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "1000",
        "/opt/mpinet/bin/mpinet",
        "/opt/mpinet/bin/mpirun",
        "mpinet 0.1.0",
        "/opt/mpinet",
        "sshd",
    ], done.stdout
    size = podman("image", "inspect", "--format", "{{.Size}}", image, timeout=60).stdout
    print(f"image size: {int(size) / 1e6:.0f} MB")


def test_mpirun_starts_two_ranks_in_the_container(podman, image):
    script = (
        "import sys; from mpi4py import MPI; c = MPI.COMM_WORLD; "
        "sys.stdout.write(f'rank {c.rank} of {c.size}\\n')"
    )
    done = podman.run(image, "mpirun", "-n", "2", "python", "-c", script, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    # Hydra forwards each rank's output: lines of two ranks may interleave
    ranks = re.findall(r"rank (\d+) of (\d+)", done.stdout)
    assert sorted(ranks) == [("0", "2"), ("1", "2")], done.stdout


def test_train_then_eval_in_the_container(podman, image, shared_data, tmp_path):
    """20 steps on 2 ranks, the data read from the read-only mount, the run directory on
    the host; then `mpinet eval` of the checkpoint in a new container."""
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 1000, 1000)  # the image runs as mpiuser (uid 1000)
    mounts = [
        f"--volume={work}:/work",
        f"--volume={shared_data}:/data:ro",
        "--env=MPINET_DATA_SOURCE=/data",
        "--env=XDG_CACHE_HOME=/work/cache",  # the prepared mnist.h5, for eval's container too
    ]
    started = time.monotonic()
    train = podman.run(
        *mounts,
        image,
        *("mpirun", "-n", "2", "mpinet", "train", "--run-dir", "/work/run"),
        *("--set", "train.max_steps=20"),
        timeout=300,
    )
    timed("train in the container", started)
    assert train.returncode == 0, train.stdout + train.stderr
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["world_size"] == 2
    checkpoints = sorted((work / "run" / "checkpoints").glob("ckpt-*.h5"))
    assert checkpoints, list((work / "run").iterdir())

    started = time.monotonic()
    inside = f"/work/run/checkpoints/{checkpoints[-1].name}"
    evaluated = podman.run(*mounts, image, "mpinet", "eval", inside, timeout=180)
    timed("eval in the container", started)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    match = re.search(r"^accuracy (\S+) \((\d+)/10000\)", evaluated.stdout, re.M)
    assert match, evaluated.stdout
    assert 0.5 < float(match.group(1)) <= 1, evaluated.stdout


def test_mpirun_reaches_ranks_in_other_containers_over_ssh(podman, image, tmp_path):
    """The MPIJob's layout with podman: two "worker" containers run sshd on port 2222 as
    mpiuser with the keys mounted at /home/mpiuser/.ssh, a "launcher" runs mpirun with a
    hostfile naming them; each rank reports the container it runs in."""
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    os.chown(keys, 1000, 1000)
    made = podman.run(
        f"--volume={keys}:/keys",
        image,
        *("ssh-keygen", "-q", "-t", "rsa", "-N", "", "-f", "/keys/id_rsa"),
        timeout=120,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    shutil.copy(keys / "id_rsa.pub", keys / "authorized_keys")
    os.chown(keys / "authorized_keys", 1000, 1000)
    (tmp_path / "hostfile").write_text("".join(f"worker-{i}:1\n" for i in range(2)))
    tag = uuid.uuid4().hex[:8]
    network = f"mpinet-test-{tag}"
    workers = [f"worker-{i}" for i in range(2)]
    mount = f"--volume={keys}:/home/mpiuser/.ssh:ro"
    podman("network", "create", network, timeout=60)
    try:
        for worker in workers:
            podman(
                *("run", "--detach", "--rm", "--name", f"{worker}-{tag}", "--network"),
                f"{network}:alias={worker}",
                *(mount, image, "/usr/sbin/sshd", "-De", "-f", "/home/mpiuser/.sshd_config"),
                timeout=60,
            )
        script = (
            "import socket, sys; from mpi4py import MPI; "
            "sys.stdout.write(f'rank {MPI.COMM_WORLD.rank} in {socket.gethostname()}\\n')"
        )
        launcher = ["mpirun", "-f", "/etc/mpi/hostfile", "-n", "2", "python", "-c", script]
        done = None
        for _ in range(10):  # sshd may not listen yet
            done = podman(
                *("run", "--rm", "--name", f"launcher-{tag}", "--network", network, mount),
                f"--volume={tmp_path / 'hostfile'}:/etc/mpi/hostfile:ro",
                *(image, *launcher),
                timeout=120,
                check=False,
            )
            if done.returncode == 0 or "Connection refused" not in done.stderr:
                break
            time.sleep(1)
        assert done.returncode == 0, done.stdout + done.stderr
        ranks = re.findall(r"rank (\d+) in (\S+)", done.stdout)
        hostnames = [
            podman(
                "inspect", "--format", "{{.Config.Hostname}}", f"{w}-{tag}", timeout=60
            ).stdout.strip()
            for w in workers
        ]
        assert sorted(ranks) == [("0", hostnames[0]), ("1", hostnames[1])], done.stdout
    finally:
        for name in [*(f"{w}-{tag}" for w in workers), f"launcher-{tag}"]:
            podman("rm", "--force", "--ignore", name, timeout=60, check=False)
        podman("network", "rm", "--force", network, timeout=60, check=False)
