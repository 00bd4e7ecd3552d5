#!/usr/bin/env python3
"""Writes callhook's man pages at build time from the text they document, so they cannot drift
from it: callhook(1) and callhook-COMMAND(1) from the built binary's `callhook --help` and
`callhook COMMAND --help`, libcallhook(3) from the public headers' comments.

usage: manpages.py CALLHOOK_BINARY INCLUDE_DIR OUT_DIR VERSION

The help texts are plain text for a terminal; this reads their few shapes: a "usage:" block
(the synopsis), paragraphs, indented option lists ("  --flag ARG   what it does", with deeper
indented continuation lines), the settings table that config_print_help() prints, headings (a
line ending in ':' before indented lines) and indented examples, which stay as they are.
Writes OUT_DIR/man1/*.1 and OUT_DIR/man3/libcallhook.3; nothing else.
"""

import os
import re
import subprocess
import sys

SETTINGS_HEADING = "settings (flag, config file line, environment variable, default):"
# An option or subcommand at the start of a list line, then its description.
OPTION_LINE = re.compile(r"^( {0,6})(-{1,2}[A-Za-z0-9][\w-]*)(.*)$")
# A subcommand and its description: two spaces apart when indented, three at the margin.
WORD_ITEM = re.compile(r"^( {1,6}[a-z][\w-]* {2,}| ?[a-z][\w-]* {3,})(\S.*)$")


def esc(text):
    """Text for a troff text line: backslashes, hyphens (options must stay typeable), and a
    leading '.' or "'" that would make the line a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # Other than ASCII, as groff's own names: a page then needs no input encoding.
    text = "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in text)
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def term(text):
    """An option list's term: the option or subcommand bold, placeholders in capitals italic."""
    words = text.split(" ")
    out = ["\\fB%s\\fR" % esc(words[0])]
    for w in words[1:]:
        if re.fullmatch(r"[A-Z][A-Z_0-9]*[.]*", w):
            out.append("\\fI%s\\fR" % esc(w))
        else:
            out.append(esc(w))
    return " ".join(out)


def split_term(line, indent, column):
    """(term, description) of an option line. The description starts after a run of two or more
    spaces, or, where the term fills its column, at the list's column after one space."""
    body = line[indent:]
    m = re.match(r"^(\S+(?: \S+)*?) {2,}(\S.*)$", body)
    if column and len(line) > column and line[column - 1] == " " and line[column] != " " and (
            m is None or indent + len(m.group(1)) >= column):
        return line[indent:column].strip(), line[column:].strip()
    if m:
        return m.group(1), m.group(2)
    return body.strip(), ""


def list_column(lines):
    """The column at which most option lines of a list begin their description."""
    counts = {}
    for line in lines:
        m = OPTION_LINE.match(line)
        if not m:
            continue
        d = re.search(r"\S {2,}(\S)", line[len(m.group(1)):])
        if d:
            col = len(m.group(1)) + d.start(1)
            counts[col] = counts.get(col, 0) + 1
    return max(counts, key=counts.get) if counts else 0


class Page:
    """A man page's body, built from help text line by line."""

    def __init__(self):
        self.out = []
        self.mode = None  # "para", "item", "verbatim" or None

    def close(self):
        if self.mode == "verbatim":
            self.out += [".fi", ".RE"]
        self.mode = None

    def para(self, text):
        if self.mode != "para":
            self.close()
            self.out.append(".PP")
            self.mode = "para"
        self.out.append(esc(text))

    def item(self, head, text):
        self.close()
        self.out += [".TP", head]
        if text:
            self.out.append(esc(text))
        self.mode = "item"

    def more(self, text):
        self.out.append(esc(text))

    def verbatim(self, text):
        if self.mode != "verbatim":
            self.close()
            self.out += [".RS 4", ".nf"]
            self.mode = "verbatim"
        self.out.append(esc(text) if text else "")

    def raw(self, *lines):
        self.close()
        self.out += list(lines)


def convert_body(lines, page):
    """The help text after its usage block, into page."""
    column = 0
    item_indent = None  # indent of the current list item's term, while continuation may follow
    settings = False
    i = 0
    examples_done = False
    while i < len(lines):
        line = lines[i].rstrip()
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        i += 1
        if not line:
            page.close()
            item_indent = None
            continue
        indent = len(line) - len(line.lstrip(" "))
        if line == SETTINGS_HEADING:
            page.raw(".SH SETTINGS",
                     "Each setting is a flag, a line \\fIname\\fR = \\fIvalue\\fR of the "
                     "\\fB\\-\\-config\\fR file and an environment variable. The file is read "
                     "first, then the environment, then the flags: a later one wins.")
            settings = True
            continue
        if settings and indent == 2 and line.lstrip().startswith("--"):
            # config_print_help(): "--name  name = TYPE  ENV  default (min to max)", then the
            # setting's help alone on the next line, deeper.
            words = line.split()
            flag, value, env, default = words[0], words[3], words[4], " ".join(words[5:])
            what = ""
            if nxt.startswith("   "):
                what = nxt.strip()
                i += 1
            head = "\\fB%s\\fR" % esc(flag)
            if value != "yes|no":
                head += " \\fI%s\\fR" % esc(value)
            page.item(head, what)
            details = ["config file: \\fB%s = %s\\fR" % (esc(words[1]), esc(value))]
            if env != "-":
                details.append("environment: \\fB%s\\fR" % esc(env))
            if default:
                details.append("default: %s" % esc(default))
            page.out += [".br", "(" + "; ".join(details) + ")"]
            continue
        settings = False
        if indent == 0 and line.endswith(":") and nxt.startswith(" "):
            if line.lower().startswith("example") and not examples_done:
                page.raw(".SH EXAMPLES")
                examples_done = True
                line = re.sub(r"^examples?(, |:$)", "", line)
            if examples_done:
                if line:
                    page.para(line[:1].upper() + line[1:])
                    page.close()
            else:
                page.raw(".SS %s" % esc(line[:-1][:1].upper() + line[:-1][1:]))
            item_indent = None
            continue
        if page.mode == "verbatim" and indent > 2:
            page.verbatim(line[2:])  # an example's continuation line
            continue
        if item_indent is not None and indent > item_indent + 2:
            page.more(line.strip())
            continue
        m = OPTION_LINE.match(line)
        if m and indent > 0:
            block = []
            j = i - 1
            while j < len(lines) and lines[j].strip():
                block.append(lines[j])
                j += 1
            column = list_column(block) or column
            t, d = split_term(line, indent, column)
            if not d and not (nxt.startswith(" " * (indent + 3)) and nxt.strip()):
                page.verbatim(line[2:])  # a flag shown as an example, not described
                continue
            page.item(term(t), d)
            item_indent = indent
            continue
        w = WORD_ITEM.match(line)
        if w:
            page.item("\\fB%s\\fR" % esc(w.group(1).strip()), w.group(2))
            item_indent = indent
            continue
        item_indent = None
        if indent == 0:
            page.para(line)
        else:
            page.verbatim(line[2:] if indent >= 2 else line)
    page.close()


def help_text(binary, *args):
    p = subprocess.run([binary, *args], capture_output=True, text=True, check=True,
                       env=dict(os.environ, CALLHOOK_LOG="error"))
    return p.stdout


def header(name, section, version, what):
    return ['.\\" Generated by scripts/manpages.py from %s: edit that, not this.' % what,
            '.TH %s %s "" "callhook %s" "callhook manual"' % (esc(name.upper()), section,
                                                            version),
            ".nh", ".ad l"]


def usage_block(lines):
    """(synopsis lines, the rest): the usage block is the lines up to the first empty one."""
    n = 0
    while n < len(lines) and lines[n].strip():
        n += 1
    syn = lines[:n]
    pad = len("usage: ")
    out = []
    for k, line in enumerate(syn):
        if k == 0 and line.startswith("usage: "):
            out.append(line[pad:])
        elif line.startswith(" " * pad):
            out.append(line[pad:])
        else:
            out.append(line.strip())
    return out, lines[n:]


def command_page(binary, name, summary, version):
    text = help_text(binary, name, "--help")
    lines = text.rstrip("\n").split("\n")
    syn, rest = usage_block(lines)
    out = header("callhook-" + name, 1, version, "'callhook %s --help'" % name)
    out += [".SH NAME", "callhook\\-%s \\- %s" % (esc(name), esc(summary)), ".SH SYNOPSIS",
            ".nf"]
    out += [esc(s) for s in syn]
    out += [".fi", ".SH DESCRIPTION"]
    page = Page()
    convert_body(rest, page)
    body = page.out
    if body and body[0] == ".PP":
        body = body[1:]
    out += body
    out += [".SH SEE ALSO", "\\fBcallhook\\fR(1)"]
    return "\n".join(out) + "\n"


def main_page(binary, commands, version):
    text = help_text(binary, "--help")
    lines = text.rstrip("\n").split("\n")
    syn, rest = usage_block(lines)
    out = header("callhook", 1, version, "'callhook --help'")
    out += [".SH NAME",
            "callhook \\- deliver call events as signed webhooks, and receive them",
            ".SH SYNOPSIS", ".nf"]
    out += ["\\fBcallhook\\fR %s" % esc(s[len("callhook "):]) if s.startswith("callhook ")
            else esc(s) for s in syn]
    out += ["\\fBcallhook \\-\\-version\\fR", ".fi", ".SH DESCRIPTION"]
    in_commands = False
    for line in rest:
        if not line.strip():
            if not in_commands:
                out.append(".PP")
            continue
        if line == "commands:":
            out.append(".SH COMMANDS")
            in_commands = True
            continue
        m = re.match(r"^  ([a-z]+) +(\S.*)$", line)
        if in_commands and m:
            out += [".TP", "\\fBcallhook\\-%s\\fR(1)" % esc(m.group(1)), esc(m.group(2))]
            continue
        if in_commands:
            out.append(".SH NOTES")
            in_commands = False
        out.append(esc(line))
    while out[-1] == ".PP":
        out.pop()
    out = [x for k, x in enumerate(out) if not (x == ".PP" and out[k - 1] == ".SH DESCRIPTION")]
    out += [".SH ENVIRONMENT",
            ".TP", "\\fBCALLHOOK_LOG\\fR",
            "debug, info (the default), warn or error: the least a log line must be to be "
            "written.",
            ".TP", "\\fBJOURNAL_STREAM\\fR",
            "set by systemd: when it names the standard error that callhook writes its log "
            "to, each line carries a \\fB<\\fR\\fIN\\fR\\fB>\\fR syslog priority and no time of "
            "its own (the journal keeps both).",
            ".TP", "\\fBNOTIFY_SOCKET\\fR",
            "set by systemd for a service of Type=notify: \\fBserve\\fR and \\fBreceive\\fR "
            "send READY=1 to it once they accept connections, STOPPING=1 when they stop, and "
            "\\fBreceive\\fR RELOADING=1 while it reloads.",
            ".SH SEE ALSO"]
    refs = ["\\fBcallhook\\-%s\\fR(1)" % esc(c) for c, _ in commands] + ["\\fBlibcallhook\\fR(3)"]
    out.append(",\n".join(refs))
    return "\n".join(out) + "\n"


# -- libcallhook(3), from the public headers ------------------------------------------------

def comment_text(raw):
    """The text of a C comment: its markers and leading stars removed; paragraphs kept."""
    body = re.sub(r"^/\*\*?|\*/$", "", raw.strip())
    lines = [re.sub(r"^\s*\* ?", "", ln).rstrip() for ln in body.split("\n")]
    paras, cur = [], []
    for ln in lines:
        if ln.strip():
            cur.append(ln.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return paras


def header_items(path):
    """(the header's opening comment, [(declaration, comment paragraphs)]) for every CH_API
    function and every documented struct, enum, typedef and constant."""
    src = open(path, encoding="utf-8").read()
    intro = []
    m = re.match(r"\s*(/\*.*?\*/)", src, re.S)
    if m:
        intro = comment_text(m.group(1))
        src = src[m.end():]
    items = []
    pos = 0
    pending = None  # the paragraphs of the comment just before
    after_comment = False
    token = re.compile(r"/\*.*?\*/|[^\n]*\n?", re.S)
    while pos < len(src):
        t = token.match(src, pos)
        if not t or t.end() == pos:
            break
        text = t.group(0)
        pos = t.end()
        stripped = text.strip()
        if stripped.startswith("/*"):
            pending = comment_text(stripped)
            after_comment = True
            continue
        if not stripped:
            # The line end after a comment is not the blank line that parts it from code.
            if not (after_comment and text == "\n"):
                pending = None
            after_comment = False
            continue
        after_comment = False
        decl = None
        if stripped.startswith("CH_API") or stripped.startswith("typedef"):
            end = src.find(";", t.start())
            decl = src[t.start():end + 1]
        elif re.match(r"(struct|enum) \w+ \{", stripped):
            end = src.find("};", t.start())
            decl = src[t.start():end + 2]
        elif stripped.startswith("#define") and pending and not stripped.endswith("_H"):
            end = t.start()
            while True:
                nl = src.find("\n", end)
                if nl < 0 or src[nl - 1] != "\\":
                    break
                end = nl + 1
            decl = src[t.start():nl if nl >= 0 else len(src)]
        if decl is None:
            pending = None
            continue
        pos = t.start() + len(decl)
        if decl.startswith("CH_API "):
            # Continuation lines were aligned after "CH_API ": keep them aligned without it.
            decl = decl[7:].replace("\n       ", "\n")
        decl = decl.rstrip()
        items.append((decl, pending or []))
        pending = None
    return intro, items


def library_page(include_dir, version):
    headers = sorted(f for f in os.listdir(os.path.join(include_dir, "callhook"))
                     if f.endswith(".h") and f != "export.h")
    headers.sort(key=lambda f: (f != "callhook.h", f))
    out = header("libcallhook", 3, version, "the comments of include/callhook/*.h")
    out += [".SH NAME",
            "libcallhook \\- call records, Standard Webhooks signatures and a durable inbox "
            "for C programs",
            ".SH SYNOPSIS", ".nf",
            "\\fB#include <callhook/callhook.h>\\fR",
            "\\fB#include <callhook/inbox.h>\\fR",
            "",
            "cc prog.c $(pkg\\-config \\-\\-cflags \\-\\-libs callhook)",
            "cc \\-static prog.c $(pkg\\-config \\-\\-static \\-\\-cflags \\-\\-libs callhook)",
            ".fi",
            ".SH DESCRIPTION"]
    first = True
    for h in headers:
        intro, items = header_items(os.path.join(include_dir, "callhook", h))
        if not first:
            out.append(".SS <callhook/%s>" % h)
        for p in intro:
            out += [".PP", esc(p)]
        if first:
            out += [".PP",
                    "Every fallible function returns a \\fBch_code\\fR (CH_OK is 0) and, given "
                    "a \\fBstruct ch_error\\fR, says what failed in its message. Symbols other "
                    "than those below are hidden: they cannot clash with a program's own.",
                    ".SH FUNCTIONS AND TYPES", ".SS <callhook/callhook.h>"]
            first = False
        for decl, paras in items:
            out += [".PP", ".nf", "\\fB%s\\fR" % esc(decl.split("\n")[0])]
            out += [esc(ln) for ln in decl.split("\n")[1:]]
            out.append(".fi")
            if paras:
                out.append(".RS 4")
                for k, p in enumerate(paras):
                    if k:
                        out.append(".PP")
                    out.append(esc(p))
                out.append(".RE")
    out += [".SH SEE ALSO", "\\fBcallhook\\fR(1), \\fBcallhook\\-receive\\fR(1), "
            "\\fBpkg\\-config\\fR(1)"]
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) != 5:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    binary, include_dir, out_dir, version = argv[1:]
    main_help = help_text(binary, "--help")
    commands = re.findall(r"^  ([a-z]+) +(\S.*)$", main_help, re.M)
    if not commands:
        print("manpages.py: no commands in '%s --help'" % binary, file=sys.stderr)
        return 1
    pages = {"man1/callhook.1": main_page(binary, commands, version),
             "man3/libcallhook.3": library_page(include_dir, version)}
    for name, summary in commands:
        pages["man1/callhook-%s.1" % name] = command_page(binary, name, summary, version)
    for sub in ("man1", "man3"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
        # Pages of commands that are gone must not be installed.
        for old in os.listdir(os.path.join(out_dir, sub)):
            if "%s/%s" % (sub, old) not in pages:
                os.unlink(os.path.join(out_dir, sub, old))
    for rel, text in pages.items():
        path = os.path.join(out_dir, rel)
        if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
