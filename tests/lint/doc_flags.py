#!/usr/bin/env python3
"""Every `callhook COMMAND ... --flag` written as code in README.md and docs/*.md names a flag
that `callhook COMMAND --help` lists (issue 15, point 2: the docs are checked against the code).

usage: doc_flags.py PATH_TO_CALLHOOK REPO_ROOT"""
import glob
import os
import re
import subprocess
import sys


def main(binary, root):
    main_help = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    commands = set(re.findall(r"^  ([a-z]+)\s", main_help, re.M))
    helps = {}

    def help_of(cmd):
        if cmd not in helps:
            p = subprocess.run([binary, cmd, "--help"], capture_output=True, text=True)
            helps[cmd] = p.stdout + p.stderr if p.returncode == 0 else None
        return helps[cmd]

    problems = []
    for path in sorted(glob.glob(os.path.join(root, "docs", "*.md"))) + [
            os.path.join(root, "README.md")]:
        text = open(path, encoding="utf-8").read().replace("\\\n", " ")
        # Only code: fenced blocks and inline spans, where a command is written to be typed.
        code = []
        for i, part in enumerate(re.split(r"```[a-z]*\n", text)):
            if i % 2 == 1:
                code.extend(part.splitlines())
            else:
                code.extend(re.findall(r"`([^`]+)`", part))
        for line in code:
            for m in re.finditer(r"callhook ([a-z]+)((?:\s+[^\s`|;&)]+)*)", line):
                cmd, args = m.group(1), m.group(2)
                if cmd not in commands:
                    continue
                h = help_of(cmd)
                if h is None:
                    problems.append("%s: 'callhook %s --help' fails" % (path, cmd))
                    continue
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", args):
                    if flag != "--help" and flag not in h:
                        problems.append("%s: %s is not in 'callhook %s --help': %s" % (
                            os.path.basename(path), flag, cmd, line.strip()[:120]))
    for p in problems:
        print(p)
    print("%d commands' flags in the docs checked; %d problems" % (len(helps), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
