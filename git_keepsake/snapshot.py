"""Decides which files of a project belong in a snapshot: ignore files and built-in skips."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from .config import find_git_dir

__all__ = ["IgnoreRules", "list_files", "walk_files"]

# Never snapshot content, whatever the ignore files say: version control, our own
# repository and tool caches. Matched by name at any depth.
ALWAYS_SKIPPED = frozenset({".git", ".keepsake", ".mypy_cache"})
# `git keepsake checkout` stages files in such a folder inside its target for a moment.
CHECKOUT_STAGING_PREFIX = ".keepsake-checkout-"


def _skipped_name(name: str) -> bool:
    return name in ALWAYS_SKIPPED or name.startswith(CHECKOUT_STAGING_PREFIX)


def _skipped_path(parts: list[str]) -> bool:
    return any(_skipped_name(part) for part in parts)


# A folder holding one of these is a Python environment: thousands of files that
# are reproducible from requirements and never part of the experiment.
ENVIRONMENT_MARKERS = ("pyvenv.cfg", "conda-meta")

KEEPSAKEIGNORE = ".keepsakeignore"
GITIGNORE = ".gitignore"

# Tails of the regexes pathspec's GitIgnoreSpecPattern builds. pathspec matches a
# path *or anything below it*; our walk decides each directory level itself (as git
# does), so every pattern is rewritten to match the path itself only. Otherwise a
# `!keep/` line would re-include `keep/x.txt` that a `*.txt` line excludes.
_OPT_DIR_TAIL = "(?:(?P<ps_d>/)|$)"  # "foo": the path, or (pathspec) below it
_DIR_TAIL = "(?P<ps_d>/)"  # "foo/": directories only
_ANY_FOLDERS = "^(?:.+/)?"  # how a pattern without a slash starts: it matches any name


def _own_path_regex(regex: str) -> str:
    """Rewrite a pathspec regex to fully match a subject: the path, plus "/" for a directory."""
    regex = _classes_skip_slash(regex)
    if regex == ".":  # "*", "**": everything
        return ".+"
    if regex == _DIR_TAIL:  # "*/", "**/": every directory
        return ".*/"
    if regex == "/":  # "**/*/**": everything inside some directory
        return ".*/.+"
    if regex.endswith(_OPT_DIR_TAIL):
        return regex[: -len(_OPT_DIR_TAIL)] + "/?"
    if regex.endswith(_DIR_TAIL):
        return regex[: -len(_DIR_TAIL)] + "/"
    if regex.endswith("/"):  # "foo/**": everything inside foo, not foo itself
        return regex + ".+"
    # A shape this pathspec version does not build: keep pathspec's own meaning.
    return ".*?(?:" + regex + ").*"


def _classes_skip_slash(regex: str) -> str:
    """Keep bracket expressions from matching "/": git's `[!a]` never crosses folders.

    pathspec copies a glob's brackets into the regex as they are, so `[!a]` becomes
    `[^a]`, which matches "/" and lets "x[!a]" match "x/".
    """
    out = []
    i, end = 0, len(regex)
    while i < end:
        char = regex[i]
        if char == "\\":
            out.append(regex[i : i + 2])
            i += 2
        elif char == "[":
            j = i + 1
            if j < end and regex[j] == "^":
                j += 1
            if j < end and regex[j] == "]":  # a leading "]" is a member, not the end
                j += 1
            while j < end and regex[j] != "]":
                j += 2 if regex[j] == "\\" else 1
            expression = regex[i : j + 1]
            out.append(expression if expression == "[^/]" else "(?!/)" + expression)
            i = j + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


class _PatternList:
    """The patterns of one ignore file, compiled into two regexes (at most two calls per path).

    Patterns without a slash match the name alone, so they run on the name: most lines
    of a real .gitignore, and far cheaper than trying them at every folder of a path.
    """

    __slots__ = ("offset", "_names", "_paths", "_lines")

    def __init__(self, base: str, lines: Sequence[str]) -> None:
        # Paths are matched relative to the folder holding the file.
        self.offset = len(base)
        names: list[str] = []
        paths: list[str] = []
        self._lines: dict[str, tuple[int, bool]] = {}
        for i, line in enumerate(lines):
            for k, (regex, ignore) in enumerate(_compile_line(line)):
                group = f"p{i}_{k}"
                self._lines[group] = (i, ignore)
                # The empty group marks the branch that matched; at the end, it leaves the
                # branch's first character for the regex engine's quick reject.
                if _matches_name_only(regex):
                    names.append(f"{regex[len(_ANY_FOLDERS) :]}(?P<{group}>)")
                else:
                    paths.append(f"{regex.removeprefix('^')}(?P<{group}>)")
        self._names = _alternation(names)
        self._paths = _alternation(paths)

    def __bool__(self) -> bool:
        return bool(self._lines)

    def verdict(self, subject: str, name: str) -> bool | None:
        """True: ignored, False: re-included (`!`), None: no line matches.

        `subject` is the path relative to the ignore file's folder and `name` its last
        part, both with a trailing "/" for a directory.
        """
        best = None
        for regex, text in ((self._names, name), (self._paths, subject)):
            if regex is not None and (m := regex.fullmatch(text)) is not None:
                line = self._lines[m.lastgroup]  # type: ignore[index]
                if best is None or line[0] > best[0]:
                    best = line
        return None if best is None else best[1]


def _matches_name_only(regex: str) -> bool:
    """Whether an own-path regex looks at the last part only ("foo", "*.py", "**/foo/")."""
    if not regex.startswith(_ANY_FOLDERS):
        return False
    rest = regex[len(_ANY_FOLDERS) :].removesuffix("?").removesuffix("/")
    return "/" not in rest.replace("[^/]", "").replace("(?!/)", "")


def _alternation(branches: list[str]) -> re.Pattern[str] | None:
    """One regex for many patterns, where the bottom-most matching line wins.

    Branches are tried from the last line up, and Python's alternation takes the first
    branch that matches the whole subject.
    """
    if not branches:
        return None
    return re.compile("|".join(reversed(branches)), re.DOTALL)


def _compile_line(line: str) -> list[tuple[str, bool]]:
    """[(regex over subjects, whether a match means ignored)]; empty for blanks and comments."""
    if line.startswith("#"):
        return []  # before any rewriting below could turn a comment into a pattern
    negated = line.startswith("!")
    body = line[1:] if negated else line
    if body.rstrip() == "/":
        return []  # git matches nothing with "/" or "!/"; pathspec reads "!/" as "!*/"
    compiled = []
    for variant in _git_variants(body):
        if variant.rstrip().endswith("/**/"):
            # git: "foo/**/" is every directory below foo, not foo itself; pathspec reads
            # it as "foo/", which would also drop the files directly inside foo.
            variant = variant.rstrip() + "*/"
        try:
            pattern = GitIgnoreSpecPattern("!" + variant if negated else variant)
        except ValueError:  # git skips lines it cannot parse, like a bare "!"
            continue
        if pattern.include is not None and pattern.regex is not None:
            compiled.append((_own_path_regex(pattern.regex.pattern), bool(pattern.include)))
    return compiled


def _git_variants(body: str) -> list[str]:
    """Patterns that together match what git matches for one (non-negated) pattern.

    Usually just the pattern. The exception is a git quirk: in a pattern with a slash, git
    compares the literal prefix first and globs the rest on its own, so "/a**" or
    "src/a**/x" has a "**" that starts the glob and so crosses folders, as "a*/**" does.
    """
    stripped = body.rstrip()
    is_dir = stripped.endswith("/")
    core = stripped.rstrip("/") if is_dir else stripped
    if "/" not in core:
        return [body]  # matched against the name alone: no prefix step
    core = core.removeprefix("/")
    m = re.match(r"([^*?\[\\]+)\*\*+(/.*)?$", core, re.DOTALL)
    if m is None or m.group(1).endswith("/"):
        return [body]
    prefix, rest = m.group(1), m.group(2)
    tail = "/" if is_dir else ""
    if rest is None:
        variants = [f"{prefix}*", f"{prefix}*/**"]
    else:
        # "**/" may also match nothing at all, swallowing its slash ("a**/x" matches "ax").
        variants = [f"{prefix}*{rest}", f"{prefix}*/**{rest}"]
        # The glued pattern starts its glob afresh, so the quirk may apply again.
        variants += [v[1:] for v in _git_variants(f"/{prefix}{rest[1:]}")]
    return ["/" + v + tail for v in dict.fromkeys(variants)]


def _read_patterns(path: str, base: str) -> _PatternList | None:
    """An ignore file's compiled patterns; None when it is absent, unreadable or empty."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    # Bytes are decoded as os.scandir decodes file names, so non-UTF-8 names still match.
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape")
    patterns = _PatternList(base, text.split("\n"))
    return patterns if patterns else None


def _normalize(relpath: str) -> str:
    """A project-relative posix path in canonical form ("" for the project itself).

    Raises ValueError for a path that leaves the project, so nothing outside is ever listed.
    """
    relpath = os.fspath(relpath).replace(os.sep, "/")
    if posixpath.isabs(relpath) or os.path.isabs(relpath):
        raise ValueError(f"path must be relative to the project directory: {relpath!r}")
    norm = posixpath.normpath(relpath)
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"path is outside the project directory: {relpath!r}")
    return "" if norm == "." else norm


def _is_environment(names: set[str]) -> bool:
    return any(marker in names for marker in ENVIRONMENT_MARKERS)


class IgnoreRules:
    """Compiled ignore rules for one project: .keepsakeignore, .gitignores, info/exclude, skips.

    Precedence follows git, with .keepsakeignore on top: its last matching line decides
    if any matches (so `!data/` there re-includes a git-ignored folder); otherwise the
    .gitignore files from the deepest folder up; then info/exclude. Each .gitignore is
    read once per instance, so build a new instance to see edits.
    """

    def __init__(
        self,
        project_dir: str | os.PathLike,
        *,
        work_tree: str | None = None,
        common_git_dir: str | None = None,
    ) -> None:
        self.project_dir = os.path.realpath(os.fspath(project_dir))
        # .gitignore files are matched relative to the work tree root (the "top"); a
        # project that is not in git is its own top.
        self._top = os.path.realpath(work_tree) if work_tree else self.project_dir
        try:
            prefix = os.path.relpath(self.project_dir, self._top).replace(os.sep, "/")
        except ValueError:  # another drive (Windows)
            prefix = ".."
        if prefix.split("/")[0] == "..":  # not inside that work tree after all
            self._top, prefix = self.project_dir, "."
        self._prefix = "" if prefix == "." else prefix + "/"
        self._keepsake = _read_patterns(os.path.join(self.project_dir, KEEPSAKEIGNORE), "")
        self._exclude = None
        if common_git_dir is not None:
            info_exclude = os.path.join(common_git_dir, "info", "exclude")
            self._exclude = _read_patterns(info_exclude, "")
        self._gitignores: dict[str, _PatternList | None] = {}
        # .gitignore files of the folders from the work tree root down to the project's parent.
        self._outer: tuple[_PatternList, ...] = ()
        if self._prefix:
            parts = self._prefix.rstrip("/").split("/")
            keys = [""] + ["/".join(parts[:i]) + "/" for i in range(1, len(parts))]
            self._outer = tuple(p for p in map(self._gitignore, keys) if p is not None)

    @classmethod
    def for_project(cls, project_dir: str | os.PathLike) -> IgnoreRules:
        """Rules for a project, finding its git work tree (if any) by walking up from it."""
        real = os.path.realpath(os.fspath(project_dir))
        found = find_git_dir(Path(real))
        if found is None:
            return cls(real)
        work_tree, common = found
        return cls(real, work_tree=str(work_tree), common_git_dir=str(common))

    def is_keepsake_ignored(self, relpath: str) -> bool:
        """Whether .keepsakeignore (or a built-in skip) keeps a file out, whatever git says.

        For files git tracks: a tracked file stays in a snapshot even if a .gitignore line
        matches it, as in git, but .keepsakeignore still has the last word.
        """
        parts = _normalize(relpath).split("/")
        if _skipped_path(parts):
            return True
        if self._keepsake is None:
            return False
        for i in range(len(parts)):
            sub = "/".join(parts[: i + 1])
            tail = "/" if i < len(parts) - 1 else ""
            if self._keepsake.verdict(sub + tail, parts[i] + tail):
                return True
        return False

    def is_ignored(self, relpath: str, is_dir: bool) -> bool:
        """Whether a project-relative path stays out of snapshots (or a folder above it does)."""
        rel = _normalize(relpath)
        if not rel:
            return False
        parts = rel.split("/")
        if _skipped_path(parts):
            return True
        chain = list(self._outer)
        for i in range(len(parts)):
            patterns = self._gitignore_in("/".join(parts[:i]))
            if patterns is not None:
                chain.append(patterns)
            sub = "/".join(parts[: i + 1])
            sub_is_dir = is_dir or i < len(parts) - 1
            if sub_is_dir and self._in_environment(sub):
                return True
            if self._excluded(sub, sub_is_dir, chain):
                return True
        return False

    def _in_environment(self, rel: str) -> bool:
        folder = os.path.join(self.project_dir, rel)
        return any(os.path.lexists(os.path.join(folder, m)) for m in ENVIRONMENT_MARKERS)

    def _gitignore_in(self, rel: str) -> _PatternList | None:
        """The compiled .gitignore of project folder `rel` ("" for the project itself)."""
        return self._gitignore(self._prefix + rel + "/" if rel else self._prefix)

    def _gitignore(self, key: str) -> _PatternList | None:
        """The compiled .gitignore of a folder, keyed by its top-relative path ("" or "a/b/")."""
        try:
            return self._gitignores[key]
        except KeyError:
            pass
        path = os.path.join(self._top, key, GITIGNORE)
        # git (since 2.32) does not follow a symlinked .gitignore, so neither do we.
        patterns = None if os.path.islink(path) else _read_patterns(path, key)
        self._gitignores[key] = patterns
        return patterns

    def _chain_to(self, rel: str) -> list[_PatternList]:
        """.gitignore files that apply inside project folder `rel`, except its own."""
        chain = list(self._outer)
        parts = rel.split("/") if rel else []
        for i in range(len(parts)):
            patterns = self._gitignore_in("/".join(parts[:i]))
            if patterns is not None:
                chain.append(patterns)
        return chain

    def _excluded(self, rel: str, is_dir: bool, chain: Sequence[_PatternList]) -> bool:
        """The ignore-file verdict on one path whose parent folders are already known to be kept."""
        tail = "/" if is_dir else ""
        name = rel[rel.rfind("/") + 1 :] + tail
        if self._keepsake is not None:
            verdict = self._keepsake.verdict(rel + tail, name)
            if verdict is not None:
                return verdict
        subject = self._prefix + rel + tail
        for patterns in reversed(chain):
            verdict = patterns.verdict(subject[patterns.offset :], name)
            if verdict is not None:
                return verdict
        if self._exclude is not None:
            return bool(self._exclude.verdict(subject, name))
        return False


def walk_files(
    project_dir: str | os.PathLike, path: str = ".", rules: IgnoreRules | None = None
) -> Iterator[str]:
    """Like list_files, unsorted and lazily (a bad `path` still raises at once).

    Ignored folders are never listed (a huge ignored data folder costs nothing), and
    symlinked folders are not followed (no loops, nothing from outside the project).
    """
    rel = _normalize(path)
    if rules is None:
        rules = IgnoreRules.for_project(project_dir)
    root = rules.project_dir
    full = os.path.join(root, rel) if rel else root
    if not rel:
        return _walk(rules, full, rel, rules._chain_to(rel))
    # The user named this path, so ignore files do not apply to it or the folders
    # above it (a git-ignored checkpoints/ folder is still saved when asked for).
    if not os.path.isdir(full) or os.path.islink(full):
        # A single file is always included; a symlink to one is read through.
        if os.path.isfile(full) and _within(root, os.path.dirname(full)):
            return iter([rel])
        return iter([])
    parts = rel.split("/")
    if (
        not _within(root, full)  # a symlinked folder above it leads elsewhere
        or _skipped_path(parts)
        or any(rules._in_environment("/".join(parts[:i])) for i in range(1, len(parts)))
    ):
        return iter([])
    return _walk(rules, full, rel, rules._chain_to(rel))


def _within(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _walk(
    rules: IgnoreRules, start: str, start_rel: str, chain: list[_PatternList]
) -> Iterator[str]:
    """Depth-first over folders that are kept, judging each entry before going below it."""
    stack = [(start, start_rel, tuple(chain))]
    while stack:
        folder, rel, chain_here = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue  # unreadable folder: git skips it too
        names = {e.name for e in entries}
        if rel and _is_environment(names):
            continue
        if GITIGNORE in names:
            patterns = rules._gitignore_in(rel)
            if patterns is not None:
                chain_here = (*chain_here, patterns)
        prefix = rel + "/" if rel else ""
        subfolders = []
        for entry in entries:
            if _skipped_name(entry.name):
                continue
            child = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not rules._excluded(child, True, chain_here):
                        subfolders.append((entry.path, child, chain_here))
                # is_file() follows symlinks: regular files and symlinks to them, nothing else.
                elif entry.is_file() and not rules._excluded(child, False, chain_here):
                    yield child
            except OSError:
                continue
        stack.extend(reversed(subfolders))


def list_files(
    project_dir: str | os.PathLike, path: str = ".", rules: IgnoreRules | None = None
) -> list[str]:
    """Project-relative posix paths of the regular files under `path` that belong in a snapshot.

    `path` is a project-relative file or directory; the result is sorted.
    """
    return sorted(walk_files(project_dir, path, rules))
