#!/usr/bin/env python3
"""The man pages the build wrote (scripts/manpages.py): one callhook-COMMAND(1) for each command
`callhook --help` lists, callhook(1) and libcallhook(3), nothing else; each renders without a
warning, with groff -ww and as lintian renders it (man --warnings at 80 columns); each
command's page names exactly the options its --help names; libcallhook(3) shows every function
the public headers export.

usage: test_man.py CALLHOOK_BINARY MAN_DIR INCLUDE_DIR
"""

import glob
import os
import re
import subprocess
import sys

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def rendered(page):
    """The page as a terminal shows it (overstrikes removed), and what groff and man said."""
    groff = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-rLL=80n", page],
                           capture_output=True)
    lintian_way = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", page],
                                 capture_output=True, env=dict(os.environ, MANWIDTH="80",
                                                               LC_ALL="C.UTF-8"))
    text = groff.stdout.decode("utf-8", "replace")
    text = re.sub(r".\x08", "", text)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    # Hyphens and minus signs as a terminal may show them: all are '-' to a reader.
    text = text.replace("\u2010", "-").replace("\u2212", "-")
    # A word broken at the end of a line ("--forward-" / "timeout-ms") would read as two.
    text = re.sub(r"-\n\s+", "-", text)
    messages = (groff.stderr + lintian_way.stderr).decode("utf-8", "replace").strip()
    if groff.returncode or lintian_way.returncode:
        messages += "\n(exit %d, %d)" % (groff.returncode, lintian_way.returncode)
    return text, messages


def main(binary, man_dir, include_dir):
    problems = []
    main_help = subprocess.run([binary, "--help"], capture_output=True, text=True,
                               check=True).stdout
    commands = re.findall(r"^  ([a-z]+) +(\S.*)$", main_help, re.M)
    want = {"man1/callhook.1", "man3/libcallhook.3"}
    want |= {"man1/callhook-%s.1" % c for c, _ in commands}
    have = {os.path.relpath(p, man_dir) for p in glob.glob(os.path.join(man_dir, "man*", "*"))}
    for p in sorted(want - have):
        problems.append("%s: missing" % p)
    for p in sorted(have - want):
        problems.append("%s: a page for nothing callhook --help lists" % p)

    checked = 0
    for rel in sorted(want & have):
        text, messages = rendered(os.path.join(man_dir, rel))
        if messages:
            problems.append("%s: rendering said: %s" % (rel, messages))
        if len(text.splitlines()) < 10:
            problems.append("%s: renders to almost nothing" % rel)
        name = os.path.basename(rel)[:-2]
        if rel.startswith("man1/callhook-"):
            cmd = name[len("callhook-"):]
            summary = dict(commands)[cmd]
            help_text = subprocess.run([binary, cmd, "--help"], capture_output=True, text=True,
                                       check=True).stdout
            head = re.sub(r"\s+", " ", text.split("SYNOPSIS")[0])
            if "callhook-%s - %s" % (cmd, summary) not in head:
                problems.append("%s: NAME is not 'callhook-%s - %s'" % (rel, cmd, summary))
            in_help, in_page = set(OPTION.findall(help_text)), set(OPTION.findall(text))
            if in_help != in_page:
                problems.append("%s: options only in --help: %s; only in the page: %s" % (
                    rel, sorted(in_help - in_page) or "none", sorted(in_page - in_help) or "none"))
            # Every line of the usage is the synopsis.
            usage = help_text.split("\n\n")[0]
            first = re.sub(r"\s+", " ", usage.split("\n")[0][len("usage: "):])
            if first not in re.sub(r"[ \t]+", " ", text):
                problems.append("%s: the synopsis lacks '%s'" % (rel, first))
        elif rel == "man1/callhook.1":
            for cmd, summary in commands:
                if "callhook-%s(1)" % cmd not in text:
                    problems.append("%s: does not list callhook-%s(1)" % (rel, cmd))
            missing = set(OPTION.findall(main_help)) - set(OPTION.findall(text))
            if missing:
                problems.append("%s: lacks %s" % (rel, sorted(missing)))
        else:
            flat = re.sub(r"\s+", " ", text)
            for header in sorted(glob.glob(os.path.join(include_dir, "callhook", "*.h"))):
                src = open(header, encoding="utf-8").read()
                for fn in re.findall(r"^CH_API\b[^(;]*?\b(ch_\w+)\s*\(", src, re.M):
                    if not re.search(r"\b%s\(" % fn, flat):
                        problems.append("%s: %s (%s) is not in the page" % (
                            rel, fn, os.path.basename(header)))
        checked += 1
    for p in problems:
        print("FAIL:", p)
    print("%d pages checked; %d problems" % (checked, len(problems)))
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
