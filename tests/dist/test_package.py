#!/usr/bin/env python3
"""The Debian packages, built as `make package` builds them (scripts/package.sh: debian/ and
debhelper, a release build without the test suite), then checked from the outside:

- dpkg-deb -I: the three packages, their version (debian/changelog, CMake's, --version agree),
  a Depends that names the package of every shared library the binaries link (shlibdeps),
  conffiles; dpkg-deb -c: exactly the files each should hold;
- lintian: no error and no warning;
- unpacked (dpkg-deb -x) into a temporary root: no run path in the binaries, every library
  found; `callhook --version`; then the walk of docs/INSTALL.md without systemd: serve with the
  unit's command line and the packaged serve.conf, the first admin key it writes, a Voice App,
  a receiver with the packaged example receive.conf and its secret as receive-NAME.env gives
  it, one event delivered end to end;
- a C program built with `pkg-config --cflags --libs callhook` against the unpacked
  libcallhook-dev, and against debhelper's DESTDIR install (debian/tmp), run on the unpacked
  libcallhook0;
- `systemd-analyze verify` of both units with the unpacked paths, and their
  `systemd-analyze security --offline` exposure under a ceiling;
- the postinst, run with stand-ins for adduser and systemd's helpers: it makes the user before
  the service is enabled, and not a second time.

usage: test_package.py SOURCE_DIR VERSION
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import PROXY_VARS, free_port, scaled, wait_until  # noqa: E402

HOST = "127.0.0.1"
# systemd-analyze security's exposure (0 to 10, lower is better) that the units must stay under.
EXPOSURE_CEILING = 2.0

failures = []
passes = 0


def check(ok, what):
    global passes
    if ok:
        passes += 1
    else:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return ok


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def deb_field(deb, field):
    return run(["dpkg-deb", "-f", deb, field]).stdout.strip()


def deb_files(deb):
    """The files and links a package holds (not its folders), as absolute paths."""
    out = run(["dpkg-deb", "-c", deb]).stdout
    files = set()
    for line in out.splitlines():
        if line.startswith("d"):
            continue
        name = line.split(None, 5)[5].split(" -> ")[0]
        files.add(name[1:])
    return files


def build(src, out):
    env = dict(os.environ, DEB_BUILD_OPTIONS="noddebs parallel=%d" % (os.cpu_count() or 2))
    t0 = time.monotonic()
    p = run([os.path.join(src, "scripts", "package.sh"), out], env=env)
    took = time.monotonic() - t0
    print("make package's build: %.0f s" % took, flush=True)
    if not check(p.returncode == 0, "scripts/package.sh failed"):
        print(p.stdout[-6000:], p.stderr[-6000:])
        return None
    for line in (p.stdout + p.stderr).splitlines():
        if "warning:" in line and ".c:" in line:
            print("compiler:", line.strip())
    return took


def check_metadata(debs, version, commands, multiarch):
    for name, deb in debs.items():
        check(deb_field(deb, "Package") == name, "%s: Package field" % name)
        check(deb_field(deb, "Version") == version, "%s: Version %s, not %s" % (
            name, deb_field(deb, "Version"), version))
    info = run(["dpkg-deb", "-I", debs["callhook"]]).stdout
    print(info)
    lib = "/usr/lib/%s" % multiarch
    man1 = {"/usr/share/man/man1/callhook.1.gz"} | {
        "/usr/share/man/man1/callhook-%s.1.gz" % c for c in commands}
    want = {
        "callhook": {"/usr/bin/callhook", "/etc/callhook/serve.conf",
                     "/lib/systemd/system/callhook-serve.service",
                     "/lib/systemd/system/callhook-receive@.service",
                     "/usr/share/bash-completion/completions/callhook",
                     "/usr/share/doc/callhook/examples/receive.conf",
                     "/usr/share/doc/callhook/examples/begin-call.json",
                     "/usr/share/doc/callhook/examples/end-call-answered.json",
                     "/usr/share/doc/callhook/README.md.gz",
                     "/usr/share/doc/callhook/OPERATIONS.md.gz",
                     "/usr/share/doc/callhook/RECEIVER.md.gz",
                     "/usr/share/doc/callhook/SECURITY.md.gz",
                     "/usr/share/doc/callhook/changelog.gz",
                     "/usr/share/doc/callhook/copyright",
                     "/usr/share/lintian/overrides/callhook"} | man1,
        "libcallhook0": {"%s/libcallhook.so.0" % lib, "%s/libcallhook.so.%s" % (lib, version),
                         "/usr/share/doc/libcallhook0/changelog.gz",
                         "/usr/share/doc/libcallhook0/copyright",
                         "/usr/share/lintian/overrides/libcallhook0"},
        "libcallhook-dev": {"%s/libcallhook.so" % lib, "%s/libcallhook.a" % lib,
                            "%s/pkgconfig/callhook.pc" % lib,
                            "/usr/share/man/man3/libcallhook.3.gz",
                            "/usr/share/doc/libcallhook-dev/changelog.gz",
                            "/usr/share/doc/libcallhook-dev/copyright"} | {
            "/usr/include/callhook/%s" % h for h in os.listdir(
                os.path.join(SRC, "include", "callhook"))},
    }
    for name, files in want.items():
        have = deb_files(debs[name])
        check(have == files, "%s's files: missing %s; not expected %s" % (
            name, sorted(files - have) or "none", sorted(have - files) or "none"))
    # conffiles: the settings, and nothing the package would overwrite on an upgrade.
    ctl = tempfile.mkdtemp(dir=WORK)
    run(["dpkg-deb", "-e", debs["callhook"], ctl])
    with open(os.path.join(ctl, "conffiles")) as f:
        check(f.read().split() == ["/etc/callhook/serve.conf"], "callhook's conffiles")
    dev_depends = deb_field(debs["libcallhook-dev"], "Depends")
    check("libcallhook0 (= %s)" % version in dev_depends, "libcallhook-dev depends on its library")
    check("adduser" in deb_field(debs["callhook"], "Depends"), "callhook depends on adduser")
    return ctl


def check_shlibs(root, debs):
    """Every shared library the unpacked binaries link is found, and the package it comes from
    is in the Depends of the package that holds the binary; no run path anywhere."""
    lib = None
    for name, rel in (("callhook", "usr/bin/callhook"), ("libcallhook0", None)):
        if rel is None:
            rel = next(os.path.relpath(os.path.join(d, f), root)
                       for d, _, fs in os.walk(os.path.join(root, "usr/lib")) for f in fs
                       if re.fullmatch(r"libcallhook\.so\.\d+\.\d+\.\d+", f))
            lib = os.path.dirname(os.path.join(root, rel))
        path = os.path.join(root, rel)
        dyn = run(["readelf", "-d", path]).stdout
        check("RPATH" not in dyn and "RUNPATH" not in dyn, "%s has a run path" % rel)
        ldd = run(["ldd", path], env=dict(os.environ, LD_LIBRARY_PATH=lib or "")).stdout
        check("not found" not in ldd, "%s: a library is not found:\n%s" % (rel, ldd))
        depends = {d.strip().split()[0] for d in deb_field(debs[name], "Depends").split(",")}
        for soname in re.findall(r"NEEDED.*\[(.*)\]", dyn):
            m = re.search(r"^\s*%s => (\S+)" % re.escape(soname), ldd, re.M)
            if not check(m is not None, "%s: %s is not resolved" % (rel, soname)):
                continue
            owner = run(["dpkg", "-S", os.path.realpath(m.group(1))])
            if owner.returncode != 0:
                owner = run(["dpkg", "-S", m.group(1)])
            pkg = owner.stdout.split(":")[0].strip()
            check(pkg in depends, "%s links %s of %s, which Depends (%s) does not name" % (
                rel, soname, pkg or "no package", ", ".join(sorted(depends))))
    return lib


def check_lintian(out):
    changes = [f for f in os.listdir(out) if f.endswith(".changes")]
    t0 = time.monotonic()
    p = run(["lintian", "--fail-on", "error,warning", "--display-info", "--pedantic",
             os.path.join(out, changes[0])])
    print("lintian (%.0f s), tags at the info and pedantic levels included:\n%s%s" % (
        time.monotonic() - t0, p.stdout, p.stderr.replace(
            "running with root privileges is not recommended!\n", "")), flush=True)
    check(p.returncode == 0, "lintian found errors or warnings")
    tags = re.findall(r"^([EW]): \S+: (\S+)", p.stdout, re.M)
    check(not tags, "lintian: %s" % tags)


def check_units(root):
    # systemd-analyze needs the system's own units (targets, slices) in the root beside ours,
    # and the commands the units run: /usr/bin/callhook unpacked, /bin/kill as Debian's procps
    # ships it.
    shutil.copytree("/lib/systemd/system", os.path.join(root, "usr/lib/systemd/system"),
                    symlinks=True, dirs_exist_ok=True)
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    shutil.copy2("/bin/kill", os.path.join(root, "bin", "kill"))
    units = ["callhook-serve.service", "callhook-receive@main.service"]
    p = run(["systemd-analyze", "verify", "--man=no", "--root=" + root] + units)
    check(p.returncode == 0 and not (p.stdout + p.stderr).strip(),
          "systemd-analyze verify: exit %d: %s%s" % (p.returncode, p.stdout, p.stderr))
    # The check works: a unit whose command is missing is refused.
    os.rename(os.path.join(root, "usr/bin/callhook"), os.path.join(root, "usr/bin/callhook.x"))
    p = run(["systemd-analyze", "verify", "--man=no", "--root=" + root, units[0]])
    check(p.returncode != 0 and "callhook" in p.stderr,
          "systemd-analyze verify accepted a unit whose binary is missing")
    os.rename(os.path.join(root, "usr/bin/callhook.x"), os.path.join(root, "usr/bin/callhook"))
    exposures = set()
    for unit in units:
        p = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", "--root=" + root,
                 unit])
        m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", p.stdout + p.stderr)
        if check(m is not None, "systemd-analyze security %s: %s%s" % (unit, p.stdout,
                                                                        p.stderr)):
            print("systemd-analyze security --offline %s: %s %s" % (unit, m.group(1),
                                                                     m.group(2)))
            check(float(m.group(1)) <= EXPOSURE_CEILING, "%s's exposure %s is over %.1f" % (
                unit, m.group(1), EXPOSURE_CEILING))
            exposures.add("%s %s" % (m.group(1), m.group(2)))
    # docs/INSTALL.md gives the figure: it must be the one measured.
    doc = open(os.path.join(SRC, "docs", "INSTALL.md")).read()
    m = re.search(r"rates both \*\*([\d.]+ \w+)\*\*", doc)
    check(m is not None and exposures == {m.group(1)},
          "docs/INSTALL.md says %s, systemd-analyze security %s" % (
              m.group(1) if m else "nothing", sorted(exposures)))


def check_install_doc(root, debs):
    """What docs/INSTALL.md names from the packages is in them: the package file it installs,
    the files under /usr/share/doc/callhook, /etc/callhook/serve.conf, the units."""
    doc = open(os.path.join(SRC, "docs", "INSTALL.md")).read()
    m = re.search(r"\./build/package/(callhook_\S+\.deb)", doc)
    built = os.path.basename(debs["callhook"])
    if run(["dpkg-architecture", "-qDEB_HOST_ARCH"]).stdout.strip() == "amd64":
        check(m is not None and m.group(1) == built,
              "docs/INSTALL.md installs %s, the build made %s" % (m and m.group(1), built))
    paths = set(re.findall(r"(/usr/share/doc/callhook/[\w./-]*\w|/lib/systemd/system/[\w@.-]*\w|"
                           r"/etc/callhook/serve\.conf|/usr/bin/callhook)", doc))
    check(len(paths) >= 4, "docs/INSTALL.md names packaged files: %s" % sorted(paths))
    for path in sorted(paths):
        check(os.path.exists(os.path.join(root, path.lstrip("/"))),
              "docs/INSTALL.md names %s, which the packages do not hold" % path)


def check_postinst(ctl):
    """The postinst with stand-ins on PATH for the commands it and debhelper's snippets run."""
    bindir = os.path.join(WORK, "stubs")
    os.makedirs(bindir)
    log = os.path.join(WORK, "postinst.log")
    users = os.path.join(WORK, "users")
    stub = '#!/bin/sh\necho "$(basename "$0") $*" >> %s\n' % log
    for name in ("adduser", "install", "deb-systemd-helper", "deb-systemd-invoke", "systemctl"):
        with open(os.path.join(bindir, name), "w") as f:
            f.write(stub)
            if name == "adduser":
                f.write('echo "$@" >> %s\n' % users)
        os.chmod(os.path.join(bindir, name), 0o755)
    # getent knows the user once the stand-in adduser has "made" it.
    with open(os.path.join(bindir, "getent"), "w") as f:
        f.write('#!/bin/sh\ngrep -q " $2\\$" %s 2>/dev/null\n' % users)
    os.chmod(os.path.join(bindir, "getent"), 0o755)
    env = dict(os.environ, PATH=bindir + ":/usr/bin:/bin")
    script = os.path.join(ctl, "postinst")
    for attempt in (1, 2):
        p = run(["sh", script, "configure", "" if attempt == 1 else "0.1.0"], env=env)
        check(p.returncode == 0, "postinst configure #%d: %s%s" % (attempt, p.stdout, p.stderr))
    calls = open(log).read().splitlines()
    print("postinst ran (twice):\n  " + "\n  ".join(calls))
    adds = [c for c in calls if c.startswith("adduser ")]
    check(len(adds) == 1 and "--system" in adds[0] and adds[0].endswith(" callhook") and
          "--home /var/lib/callhook" in adds[0], "postinst: adduser calls %s" % adds)
    enable = [i for i, c in enumerate(calls)
              if c.startswith("deb-systemd-helper enable callhook-serve.service")]
    check(bool(adds and enable and calls.index(adds[0]) < enable[0]),
          "postinst: the user is made before callhook-serve is enabled: %s" % calls)
    if not os.path.isdir("/var/lib/callhook"):
        check(any(c.startswith("install -d -o callhook -g callhook -m 0750 /var/lib/callhook")
                  for c in calls), "postinst: the state directory")


def unit_command(root, unit):
    """A unit's ExecStart, split, with the unpacked binary."""
    with open(os.path.join(root, "lib/systemd/system", unit)) as f:
        line = next(ln for ln in f if ln.startswith("ExecStart="))
    words = line[len("ExecStart="):].split()
    words[0] = os.path.join(root, words[0].lstrip("/"))
    return words


def connects(port):
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def walk_install_doc(root, lib):
    """docs/INSTALL.md's steps after the package is installed, without systemd: each daemon
    runs as its unit says (command line, settings, environment file, working directory), with
    the listen address and the state directory moved into the test's folder."""
    callhook = os.path.join(root, "usr/bin/callhook")
    v = run([callhook, "--version"])
    check(v.stdout.strip() == "callhook " + VERSION, "callhook --version: %r" % v.stdout)
    state = os.path.join(WORK, "var/lib/callhook")
    os.makedirs(state)
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = HOST
    procs = []
    try:
        serve_port = free_port()
        cmd = unit_command(root, "callhook-serve.service")
        check(cmd[1:] == ["serve", "--config", "/etc/callhook/serve.conf"],
              "callhook-serve.service runs %s" % cmd)
        # The packaged settings, with the state directory and the port of this test.
        conf = os.path.join(WORK, "serve.conf")
        text = open(os.path.join(root, "etc/callhook/serve.conf")).read()
        check("db = sqlite:/var/lib/callhook/callhook.db" in text, "serve.conf's database")
        with open(conf, "w") as f:
            f.write(text.replace("/var/lib/callhook", state).replace(
                "127.0.0.1:8080", "%s:%d" % (HOST, serve_port)))
        serve_log = open(os.path.join(WORK, "serve.log"), "wb")
        serve = subprocess.Popen(cmd[:2] + ["--config", conf], cwd=state, env=env,
                                 stdin=subprocess.DEVNULL, stdout=serve_log, stderr=serve_log)
        procs.append(serve)
        wait_until(lambda: connects(serve_port) or serve.poll() is not None, scaled(30),
                   what="serve's port")
        key_file = os.path.join(state, "admin.key")
        check(os.path.exists(key_file), "serve wrote no admin.key in its state directory")
        check(oct(os.stat(key_file).st_mode & 0o777) == "0o600", "admin.key's mode")
        cli_env = dict(env, CALLHOOK_KEY=open(key_file).read().strip(),
                       CALLHOOK_URL="http://%s:%d" % (HOST, serve_port))

        def cli(*args):
            p = run([callhook, *args], env=cli_env)
            check(p.returncode == 0, "callhook %s: %s%s" % (" ".join(args), p.stdout, p.stderr))
            return p.stdout

        rx_port = free_port()
        base = "http://%s:%d/calls" % (HOST, rx_port)
        cli("app", "put", "support", "--begin-url", base + "/begin", "--end-url", base + "/end",
            "--allow-http", "--allow-private")
        secret = cli("app", "secret", "support").split()[1]
        # The receiver: the packaged example as receive-main.conf, its secret as the
        # environment file gives it, in its own state directory.
        rx_state = os.path.join(state, "receive-main")
        os.makedirs(rx_state)
        cmd = unit_command(root, "callhook-receive@.service")
        check(cmd[1:] == ["receive", "--config", "/etc/callhook/receive-%i.conf"],
              "callhook-receive@.service runs %s" % cmd)
        text = open(os.path.join(root, "usr/share/doc/callhook/examples/receive.conf")).read()
        check("listen = 127.0.0.1:9000" in text, "receive.conf's listen")
        conf = os.path.join(WORK, "receive-main.conf")
        with open(conf, "w") as f:
            f.write(text.replace("127.0.0.1:9000", "%s:%d" % (HOST, rx_port)))
        rx_log = open(os.path.join(WORK, "receive.log"), "wb")
        rx = subprocess.Popen(cmd[:2] + ["--config", conf], cwd=rx_state,
                              env=dict(env, CALLHOOK_RECEIVE_SECRET=secret),
                              stdin=subprocess.DEVNULL, stdout=rx_log, stderr=rx_log)
        procs.append(rx)
        wait_until(lambda: connects(rx_port) or rx.poll() is not None, scaled(30),
                   what="the receiver's port")
        cli("send", "begin", "--app", "support",
            os.path.join(root, "usr/share/doc/callhook/examples/begin-call.json"))
        jsonl = os.path.join(rx_state, "calls.jsonl")
        try:
            wait_until(lambda: os.path.exists(jsonl) and
                       "291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10" in open(jsonl).read(), scaled(30),
                       what="the event in the receiver's calls.jsonl")
            check(True, "")
        except TimeoutError as e:
            check(False, str(e))
        check("delivered" in cli("messages", "--app", "support"), "the message is delivered")
        check(os.path.exists(os.path.join(rx_state, "inbox.db")), "the inbox in its folder")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p, name in zip(procs, ("serve", "receive")):
            check(p.wait(scaled(30)) == 0, "%s did not stop cleanly" % name)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for name in ("serve.log", "receive.log"):
            path = os.path.join(WORK, name)
            if failures and os.path.exists(path):
                print("--- %s\n%s" % (name, open(path, errors="replace").read()))


def check_library(root, lib, destdir_root):
    """lib_consumer.c built with pkg-config against an installed libcallhook-dev: the unpacked
    packages, and debhelper's own `make install` into debian/tmp."""
    expected = ("version=%s\nvector=ok\n"
                "active_call_id=291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10\n"
                "correlation_id=6b8a9c1d-2e3f-4a5b-8c7d-0e1f2a3b4c5d\n"
                "dedupe_key=291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10\n"
                "call_type=ActiveCall\n" % VERSION)
    multiarch = os.path.relpath(lib, os.path.join(root, "usr/lib"))
    record = os.path.join(root, "usr/share/doc/callhook/examples/begin-call.json")
    system_pc = run(["pkg-config", "--variable", "pc_path", "pkg-config"]).stdout.strip()
    for where, top in (("the unpacked packages", root), ("debian/tmp", destdir_root)):
        pc_env = dict(os.environ, PKG_CONFIG_SYSROOT_DIR=top, PKG_CONFIG_LIBDIR=os.path.join(
            top, "usr/lib", multiarch, "pkgconfig") + ":" + system_pc)
        flags = run(["pkg-config", "--cflags", "--libs", "callhook"], env=pc_env)
        if not check(flags.returncode == 0, "%s: pkg-config: %s" % (where, flags.stderr)):
            continue
        exe = os.path.join(WORK, "consumer")
        cc = run(["cc", "-Wall", "-Wextra", "-Werror", "-o", exe,
                  os.path.join(HERE, "lib_consumer.c")] + flags.stdout.split())
        if not check(cc.returncode == 0, "%s: the program does not build: %s%s" % (
                where, cc.stdout, cc.stderr)):
            continue
        # It runs on the unpacked libcallhook0, whichever headers it was built with.
        p = run([exe, record], env=dict(os.environ, LD_LIBRARY_PATH=lib))
        check(p.stdout == expected and p.returncode == 0, "%s: the program said %r%s" % (
            where, p.stdout, p.stderr))
        ldd = run(["ldd", exe], env=dict(os.environ, LD_LIBRARY_PATH=lib)).stdout
        check("%s/libcallhook.so.0 " % lib in ldd, "%s: libcallhook from %s" % (where, ldd))


def main():
    global SRC, VERSION, WORK
    if len(sys.argv) != 3:
        print(__doc__.split("usage: ")[1], file=sys.stderr)
        return 2
    SRC, VERSION = os.path.abspath(sys.argv[1]), sys.argv[2]
    WORK = tempfile.mkdtemp(prefix="callhook-package-")
    t0 = time.monotonic()
    try:
        changelog = run(["dpkg-parsechangelog", "-l", os.path.join(SRC, "debian/changelog"),
                         "-S", "Version"]).stdout.strip()
        check(changelog == VERSION, "debian/changelog says %s, CMake %s" % (changelog, VERSION))
        out = os.path.join(WORK, "out")
        if build(SRC, out) is None:
            return 1
        debs = {}
        for f in os.listdir(out):
            if f.endswith(".deb"):
                debs[f.split("_")[0]] = os.path.join(out, f)
        if not check(set(debs) == {"callhook", "libcallhook0", "libcallhook-dev"},
                     "packages built: %s" % sorted(debs)):
            return 1
        root = os.path.join(WORK, "root")
        for deb in debs.values():
            run(["dpkg-deb", "-x", deb, root], check=True)
        commands = re.findall(r"^  ([a-z]+) ", run([os.path.join(root, "usr/bin/callhook"),
                                                    "--help"]).stdout, re.M)
        check(len(commands) > 10, "commands of callhook --help: %s" % commands)
        multiarch = run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"]).stdout.strip()
        ctl = check_metadata(debs, changelog, commands, multiarch)
        lib = check_shlibs(root, debs)
        check_lintian(out)
        check_postinst(ctl)
        check_library(root, lib, os.path.join(out, "callhook-%s" % changelog, "debian", "tmp"))
        check_install_doc(root, debs)
        walk_install_doc(root, lib)
        check_units(root)
    finally:
        if os.environ.get("CALLHOOK_KEEP_TMP"):
            print("kept", WORK)
        else:
            shutil.rmtree(WORK, ignore_errors=True)
    print("%d passed, %d failed (%.0f s)" % (passes, len(failures), time.monotonic() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
