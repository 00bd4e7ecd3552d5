#!/usr/bin/env python3
"""The console's files as `callhook serve` answers them at /ui/ (docs/CONSOLE.md): each file of
src/ui/assets byte for byte with its type, the security headers on every answer, ETag and 304,
the relative redirect of /ui, no key needed, the API untouched; and the rules the page's code
keeps (no HTML built from strings, no inline script or style, only its own files referenced).
What the page does in a browser is tests/browser/console.mjs.

usage: test_ui.py CALLHOOK_BINARY ASSETS_DIR
"""

import http.client
import os
import re
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import HOST, Serve, http_request  # noqa: E402

BIN = None
ASSETS = None

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def asset_names():
    return sorted(n for n in os.listdir(ASSETS) if os.path.isfile(os.path.join(ASSETS, n)))


def asset_bytes(name):
    with open(os.path.join(ASSETS, name), "rb") as f:
        return f.read()


class Files(unittest.TestCase):
    serve = None

    @classmethod
    def setUpClass(cls):
        cls.serve = Serve(BIN, name="serve-ui").start()

    @classmethod
    def tearDownClass(cls):
        cls.serve.close()

    def get(self, path, method="GET", headers=None, body=None):
        return http_request(self.serve.port, method, path, body, headers)

    def assert_security_headers(self, r):
        self.assertEqual(r.headers.get("content-security-policy"), CSP, r)
        self.assertEqual(r.headers.get("x-content-type-options"), "nosniff", r)
        self.assertEqual(r.headers.get("referrer-policy"), "no-referrer", r)
        self.assertEqual(r.headers.get("x-frame-options"), "DENY", r)

    def test_every_file_byte_for_byte_with_its_type_and_no_key(self):
        names = asset_names()
        self.assertIn("index.html", names)
        for name in names:
            with self.subTest(name=name):
                r = self.get("/ui/" + name)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, asset_bytes(name))
                self.assertEqual(r.headers.get("content-type"), TYPES[os.path.splitext(name)[1]])
                self.assertEqual(r.headers.get("cache-control"), "no-cache")
                self.assertRegex(r.headers.get("etag", ""), r'^"[0-9a-f]{20}"$')
                self.assert_security_headers(r)

    def test_the_folder_is_the_page(self):
        r = self.get("/ui/")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, asset_bytes("index.html"))
        self.assert_security_headers(r)
        # A key, even a wrong one, changes nothing: the files are public, the data is not.
        r2 = self.get("/ui/", headers={"Authorization": "Bearer chk_wrong"})
        self.assertEqual((r2.status, r2.body), (200, r.body))

    def test_ui_redirects_relative_so_a_path_prefix_is_kept(self):
        r = self.get("/ui")
        self.assertEqual(r.status, 308, r)
        self.assertEqual(r.headers.get("location"), "ui/")
        self.assert_security_headers(r)

    def test_etag_answers_304_and_a_changed_tag_the_file(self):
        r = self.get("/ui/main.js")
        tag = r.headers["etag"]
        r304 = self.get("/ui/main.js", headers={"If-None-Match": tag})
        self.assertEqual(r304.status, 304, r304)
        self.assertEqual(r304.body, b"")
        self.assertEqual(r304.headers.get("etag"), tag)
        other = self.get("/ui/main.js", headers={"If-None-Match": '"0000000000"'})
        self.assertEqual((other.status, other.body), (200, r.body))
        tags = {self.get("/ui/" + n).headers["etag"] for n in asset_names()}
        self.assertEqual(len(tags), len(asset_names()), "two files share a tag")

    def test_head_and_refused_methods(self):
        r = self.get("/ui/style.css", method="HEAD")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"")
        self.assertEqual(int(r.headers["content-length"]), len(asset_bytes("style.css")))
        for method in ("POST", "PUT", "DELETE"):
            with self.subTest(method=method):
                r = self.get("/ui/", method=method, body=b"x" if method != "DELETE" else None)
                self.assertEqual(r.status, 405, r)
                self.assertEqual(r.headers.get("allow"), "GET, HEAD")
                self.assert_security_headers(r)

    def test_unknown_files_are_404_with_the_headers(self):
        for path in ("/ui/nope.js", "/ui/sub/index.html", "/ui/.hidden", "/ui/index.html/",
                     "/ui/%2e%2e/CMakeLists.txt"):
            with self.subTest(path=path):
                r = self.get(path)
                self.assertEqual(r.status, 404, r)
                self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r)
                self.assert_security_headers(r)

    def test_the_api_is_untouched(self):
        # Paths that only start like the console's are the API's (a key needed).
        for path in ("/uix", "/ui.html", "/v1/status"):
            with self.subTest(path=path):
                r = self.get(path)
                self.assertEqual(r.status, 401, r)
                self.assertIsNone(r.headers.get("content-security-policy"))

    def test_one_connection_carries_the_page_and_its_files(self):
        conn = http.client.HTTPConnection(HOST, self.serve.port, timeout=10)
        try:
            for name in ("", "main.js", "style.css"):
                conn.request("GET", "/ui/" + name)
                resp = conn.getresponse()
                resp.read()
                self.assertEqual(resp.status, 200)
                self.assertNotEqual((resp.getheader("connection") or "").lower(), "close")
        finally:
            conn.close()


class Code(unittest.TestCase):
    """What the page's own files must never do."""

    def scripts(self):
        return {n: asset_bytes(n).decode() for n in asset_names() if n.endswith(".js")}

    def test_no_html_from_strings(self):
        banned = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|"
                            r"\beval\s*\(|new Function|createContextualFragment|DOMParser|"
                            r"setAttribute\(\s*['\"](on|style)|\.srcdoc")
        for name, text in self.scripts().items():
            with self.subTest(name=name):
                self.assertIsNone(banned.search(text), "%s: %s" % (name, banned.search(text)))

    def test_no_inline_script_style_or_handler_in_the_page(self):
        html = asset_bytes("index.html").decode()
        for script in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S):
            self.assertIn('src="', script[0])
            self.assertEqual(script[1].strip(), "")
        self.assertNotIn("<style", html)
        self.assertIsNone(re.search(r"\sstyle\s*=", html))
        self.assertIsNone(re.search(r"\son[a-z]+\s*=", html))

    def test_only_its_own_files_relative_and_no_cookie(self):
        names = set(asset_names())
        html = asset_bytes("index.html").decode()
        refs = re.findall(r'\s(?:src|href)="([^"#][^"]*)"', html)
        self.assertTrue(refs)
        for ref in refs:
            self.assertIn(ref, names, "index.html refers to %s" % ref)
        for name, text in self.scripts().items():
            for ref in re.findall(r"^import .* from '([^']+)';$", text, re.M):
                self.assertTrue(ref.startswith("./") and ref[2:] in names, "%s imports %s" % (name, ref))
            with self.subTest(name=name):
                self.assertIsNone(re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name)
                self.assertNotIn("document.cookie", text)
                self.assertNotIn("localStorage", text)


def main(argv):
    global BIN, ASSETS
    if len(argv) != 3:
        print("usage: test_ui.py CALLHOOK_BINARY ASSETS_DIR", file=sys.stderr)
        return 2
    BIN, ASSETS = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    return harness.run_suite((Files, Code), [], harness.Result)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
