"""Counts the objects written into a replica directory, as PUT requests would be counted on S3:
every file that appears under a final name (renamed into place or written and closed), with its
size, watched with inotify (Linux) so that overwritten files (the manifest) and files removed
later (compaction) are counted too. Temp files (names ending in .tmp, or starting with a dot)
are not objects. Works for the local-directory replicas of walrust and Litestream, and for the
s3s-fs data directory behind a bucket.

    w = Watcher(path); w.start(); ...; w.stop(); w.events -> [(t_monotonic, relpath, size)]
"""

import ctypes
import ctypes.util
import os
import select
import struct
import threading
import time

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_ISDIR = 0x40000000
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def is_temp(name):
    return name.endswith(".tmp") or name.startswith(".") or ".tmp-" in name or name.endswith(
        ".lock"
    )


class Watcher:
    def __init__(self, root, on_event=None):
        self.root = os.path.abspath(root)
        self.on_event = on_event  # called as on_event(path, relpath) in the watcher thread
        self.events = []  # (t, relpath, size)
        self.overflow = False
        self._wd = {}
        self._seen_dirs = set()
        self._written = {}  # path -> last CLOSE_WRITE time, to tell a write from a rename
        self._listed = {}  # path -> when a new directory's listing recorded it
        self._created = {}  # path -> (index in events, when) of a file counted at IN_CREATE
        self._stop = threading.Event()
        self._fd = None
        self._thread = None

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._add_tree(self.root, record_existing=False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        time.sleep(0.05)  # let the last events arrive
        self._stop.set()
        self._thread.join()
        os.close(self._fd)
        return self.events

    def _add_tree(self, d, record_existing):
        for dirpath, _dirnames, _filenames in os.walk(d):
            if dirpath in self._seen_dirs:
                continue
            wd = _libc.inotify_add_watch(
                self._fd, dirpath.encode(), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
            )
            if wd < 0:
                continue  # vanished
            self._wd[wd] = dirpath
            self._seen_dirs.add(dirpath)
            if record_existing:
                # Files that landed in a new directory before its watch existed, listed after
                # the watch is in place (os.walk listed it before: a file renamed into place in
                # between was in neither, and its database's first upload went unseen until
                # the second). A file both listed and reported by events counts once.
                try:
                    names = os.listdir(dirpath)
                except FileNotFoundError:
                    continue
                for f in names:
                    path = os.path.join(dirpath, f)
                    if not is_temp(f) and os.path.isfile(path):
                        self._record(path)
                        self._listed[path] = time.monotonic()

    def _record(self, path):
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = None
        rel = os.path.relpath(path, self.root)
        now = time.monotonic()
        # s3s-fs signals each PUT twice (a write and a rename of the same name, well under a
        # millisecond apart): one object
        for t, r, _ in self.events[-4:]:
            if r == rel and now - t < 0.005:
                return
        self.events.append((now, rel, size))
        if self.on_event is not None:
            self.on_event(path, rel)

    def _run(self):
        poll = select.poll()
        poll.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if not poll.poll(20):
                continue
            try:
                buf = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            off = 0
            while off < len(buf):
                wd, mask, _cookie, length = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size : off + _EVENT.size + length].rstrip(b"\0").decode()
                off += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    self.overflow = True
                    continue
                d = self._wd.get(wd)
                if d is None:
                    continue
                path = os.path.join(d, name)
                if mask & IN_ISDIR:
                    if mask & (IN_CREATE | IN_MOVED_TO):
                        self._add_tree(path, record_existing=True)
                    continue
                if is_temp(name):
                    continue
                if mask & IN_CREATE:
                    # A hard link to a complete file (walrust's local-directory store creates
                    # LTX files so: never over an existing one) has no event but this one. A
                    # file opened under its final name and written there is empty now, and
                    # counted at its close.
                    if self._size(path):
                        self._record(path)
                        self._created[path] = (len(self.events) - 1, time.monotonic())
                    continue
                if mask & (IN_MOVED_TO | IN_CLOSE_WRITE):
                    listed = self._listed.get(path)
                    if listed is not None and time.monotonic() - listed < 1.0:
                        continue  # its own events (s3s-fs sends two), around the listing
                    at, when = self._created.pop(path, (None, 0.0))
                    if at is not None and time.monotonic() - when < 1.0:
                        # Counted at its creation (written fast): its size is known now.
                        t, rel, _ = self.events[at]
                        self.events[at] = (t, rel, self._size(path))
                        continue
                    self._record(path)

    @staticmethod
    def _size(path):
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None


def summarize(events, t0=None, t1=None):
    """(objects, bytes, by kind) for events in [t0, t1]. Kinds: ltx level dirs, manifest,
    other."""
    kinds = {}
    n = b = 0
    for t, rel, size in events:
        if (t0 is not None and t < t0) or (t1 is not None and t > t1):
            continue
        n += 1
        b += size or 0
        if rel.endswith(".ltx"):
            kind = "ltx L" + os.path.basename(os.path.dirname(rel)).lstrip("0").rjust(1, "0")
        elif rel.endswith("manifest.json"):
            kind = "manifest"
        else:
            kind = "other"
        k = kinds.setdefault(kind, [0, 0])
        k[0] += 1
        k[1] += size or 0
    return n, b, kinds
