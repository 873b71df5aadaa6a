"""The public API as a whole: what ``syncsmtp`` exports, what its public
signatures refer to, and what its argument checks say."""

from __future__ import annotations

import ast
import builtins
import email.message
import importlib
import importlib.util
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import syncsmtp

# -- exports ---------------------------------------------------------------------------------------

PUBLIC_MODULES = ["syncsmtp.auth", "syncsmtp.client", "syncsmtp.errors", "syncsmtp.mailer",
                  "syncsmtp.message", "syncsmtp.policy", "syncsmtp.result"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_list_only_exported_names(name: str) -> None:
    """A public module's ``__all__`` holds public names only: each is exported by ``syncsmtp``."""
    module = importlib.import_module(name)
    for item in module.__all__:
        assert item in syncsmtp.__all__, f"{name}.__all__ has {item}, which syncsmtp does not export"
        assert getattr(syncsmtp, item) is getattr(module, item)


def test_everything_exported_exists_and_has_a_docstring() -> None:
    assert len(set(syncsmtp.__all__)) == len(syncsmtp.__all__)
    for name in syncsmtp.__all__:
        obj = getattr(syncsmtp, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), f"syncsmtp.{name} has no docstring"


# -- every name a public signature uses is exported, or is the standard library's -----------------


def _module_tree(module_name: str) -> ast.Module:
    module = importlib.import_module(module_name)
    return ast.parse(Path(module.__file__ or "").read_text())


def _top_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """Top-level statements, those under ``if TYPE_CHECKING:`` included."""
    for node in tree.body:
        if isinstance(node, ast.If):
            yield from node.body
        else:
            yield node


def _package(module_name: str) -> str:
    module = importlib.import_module(module_name)
    return module_name if hasattr(module, "__path__") else module_name.rpartition(".")[0]


def origin(module_name: str, name: str) -> tuple[str, str]:
    """The module where ``name``, as ``module_name`` knows it, is defined, and its name there."""
    for node in _top_level(_module_tree(module_name)):
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name:
            return module_name, name
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return module_name, name
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return module_name, name
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = importlib.util.resolve_name(
                        "." * node.level + (node.module or ""), _package(module_name)
                    ) if node.level else node.module or ""
                    if source.startswith("syncsmtp"):
                        return origin(source, alias.name)
                    return source, alias.name
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (alias.asname or alias.name.partition(".")[0]) == name:
                    return alias.name, ""
    if hasattr(builtins, name):
        return "builtins", name
    raise LookupError(f"{name} is not defined in {module_name}")


def _names(annotation: Any) -> set[str]:
    """The names an annotation uses (``from __future__ import annotations``
    keeps them as strings; NamedTuple as forward references)."""
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if annotation is None or annotation is inspect.Parameter.empty:
        return set()
    if not isinstance(annotation, str):
        if isinstance(annotation, type) and annotation.__module__ == "builtins":
            return set()
        return {getattr(annotation, "__name__", repr(annotation))}
    return {node.id for node in ast.walk(ast.parse(annotation, mode="eval")) if isinstance(node, ast.Name)}


def _annotations(function: Callable[..., Any]) -> Iterator[Any]:
    signature = inspect.signature(function)
    yield signature.return_annotation
    for parameter in signature.parameters.values():
        yield parameter.annotation


def public_annotations(name: str) -> Iterator[tuple[str, str, str]]:
    """(where, defining module, annotation name) for each name used by the public
    signature of ``syncsmtp.<name>``."""
    obj = getattr(syncsmtp, name)
    if inspect.isfunction(obj):
        for annotation in _annotations(obj):
            for used in _names(annotation):
                yield name, obj.__module__, used
        return
    if not inspect.isclass(obj):
        # A constant or a type alias: what its definition names.
        module, defined = origin("syncsmtp", name)
        if module.startswith("syncsmtp") and isinstance(obj, types.UnionType | typing._GenericAlias):  # type: ignore[attr-defined]
            for node in _top_level(_module_tree(module)):
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == defined for t in node.targets
                ):
                    for used in _names(ast.unparse(node.value)):
                        yield name, module, used
        return
    for cls in obj.__mro__:
        if not cls.__module__.startswith("syncsmtp"):
            continue
        for field, annotation in vars(cls).get("__annotations__", {}).items():
            if not field.startswith("_"):
                for used in _names(annotation):
                    yield f"{name}.{field}", cls.__module__, used
        for attribute, value in vars(cls).items():
            if attribute.startswith("_") and attribute not in ("__init__", "__new__"):
                continue
            if isinstance(value, property) and value.fget is not None:
                function: Any = value.fget
            elif isinstance(value, classmethod | staticmethod):
                function = value.__func__
            elif inspect.isfunction(value):
                function = value
            else:
                continue
            if getattr(function, "__module__", "").startswith("syncsmtp"):
                for annotation in _annotations(function):
                    for used in _names(annotation):
                        yield f"{name}.{attribute}", cls.__module__, used


def _exported(obj: object) -> bool:
    return any(getattr(syncsmtp, name) is obj for name in syncsmtp.__all__)


def unexported_names(names: list[str]) -> list[str]:
    """What the public signatures of ``names`` use that is neither exported nor the standard library's."""
    problems = []
    for name in names:
        for where, module_name, used in public_annotations(name):
            try:
                module, defined = origin(module_name, used)
            except LookupError as error:
                problems.append(f"{where}: {error}")
                continue
            if module.startswith("syncsmtp"):
                obj = getattr(importlib.import_module(module), defined)
                if not _exported(obj):
                    problems.append(f"{where} uses {used} ({module}), which syncsmtp does not export")
            elif module != "builtins" and module.partition(".")[0] not in sys.stdlib_module_names:
                problems.append(f"{where} uses {used} from {module}, neither syncsmtp's nor the stdlib's")
    return problems


def test_every_name_a_public_signature_uses_is_exported() -> None:
    assert unexported_names(syncsmtp.__all__) == []


def test_public_signatures_are_walked_in_full() -> None:
    used = {(where, name) for export in syncsmtp.__all__ for where, _, name in public_annotations(export)}
    assert ("send", "MessageInput") in used
    assert ("Policy.tls", "TLSMode") in used
    assert ("Mailer.send_many", "Outgoing") in used
    assert ("CheckResult.error", "SMTPError") in used, "names imported for type checking only"
    assert ("MessageInput", "email") in used, "aliases: their definition"


def _leaky(module: str, **annotations: str) -> Callable[..., None]:
    """A function as ``module`` would define it, with these (string) annotations."""
    def leaky(*args: object) -> None:
        """A function with a leaky signature."""
    leaky.__module__ = module
    leaky.__annotations__ = annotations
    leaky.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)
         for name, annotation in annotations.items() if name != "return"],
        return_annotation=annotations.get("return", inspect.Signature.empty),
    )
    return leaky


def test_an_unexported_name_in_a_public_signature_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk above notices an internal type (``Envelope``, which mailer.py
    imports) or a Twisted one (``defer.Deferred``, which _probe.py imports)."""
    functions = {
        "internal": _leaky("syncsmtp.mailer", envelope="Envelope", policy="Policy"),
        "twisted": _leaky("syncsmtp._probe", **{"return": "defer.Deferred[CheckResult]"}),
        "clean": _leaky("syncsmtp.client", message="MessageInput", **{"return": "SendResult"}),
    }
    for name, function in functions.items():
        monkeypatch.setattr(syncsmtp, name, function, raising=False)
    monkeypatch.setattr(syncsmtp, "__all__", [*syncsmtp.__all__, *functions])
    assert unexported_names(["internal"]) == [
        "internal uses Envelope (syncsmtp.message), which syncsmtp does not export"
    ]
    assert unexported_names(["twisted"]) == [
        "twisted uses defer from twisted.internet, neither syncsmtp's nor the stdlib's"
    ]
    assert unexported_names(["clean"]) == []


# -- every argument check names its parameter ------------------------------------------------------


def _message() -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"], message["To"], message["Subject"] = "ann@example.com", "bob@example.com", "x"
    message.set_content("x\n")
    return message


POLICY = syncsmtp.Policy(host="127.0.0.1", tls="none")
A_FILE = __file__


def _policy(**fields: Any) -> Callable[[], object]:
    return lambda: syncsmtp.Policy(**{"host": "h", **fields})


def _mailer(method: str, *args: Any, **kwargs: Any) -> Callable[[], object]:
    def call() -> object:
        mailer = syncsmtp.Mailer(POLICY)
        try:
            return getattr(mailer, method)(*args, **kwargs)
        finally:
            mailer.close()
    return call


CHECKS: list[tuple[str, Callable[[], object], str]] = [
    ("Policy host", _policy(host=""), "host"),
    ("Policy host type", _policy(host=5), "host"),
    ("Policy port", _policy(port="25"), "port"),
    ("Policy port range", _policy(port=0), "port"),
    ("Policy tls", _policy(tls="ssl"), "tls"),
    ("Policy verify", _policy(verify="false"), "verify"),
    ("Policy allow_plaintext_auth", _policy(allow_plaintext_auth="no"), "allow_plaintext_auth"),
    ("Policy helo_fallback", _policy(helo_fallback=1), "helo_fallback"),
    ("Policy chunking", _policy(chunking=None), "chunking"),
    ("Policy require_auth", _policy(require_auth="yes"), "require_auth"),
    ("Policy require_auth without user", _policy(require_auth=True), "require_auth"),
    ("Policy username", _policy(username=5), "username"),
    ("Policy password", _policy(username="u", password="p\n"), "password"),
    ("Policy password without user", _policy(password="p"), "password"),
    ("Policy plaintext credentials", _policy(tls="none", username="u", password="p"), "allow_plaintext_auth"),
    ("Policy auth_mechanisms string", _policy(auth_mechanisms="PLAIN"), "auth_mechanisms"),
    ("Policy auth_mechanisms unknown", _policy(auth_mechanisms=("XOAUTH2",)), "auth_mechanisms"),
    ("Policy auth_mechanisms type", _policy(auth_mechanisms=5), "auth_mechanisms"),
    ("Policy ca_file", _policy(ca_file="/nonexistent/ca.pem"), "ca_file"),
    ("Policy client_cert", _policy(client_cert=5), "client_cert"),
    ("Policy client_key alone", _policy(client_key=A_FILE), "client_key"),
    ("Policy local_hostname", _policy(local_hostname="a b"), "local_hostname"),
    ("Policy local_hostname type", _policy(local_hostname=5), "local_hostname"),
    ("Policy tls_ciphers", _policy(tls_ciphers="ALL; rm"), "tls_ciphers"),
    ("Policy.with_options unknown", lambda: POLICY.with_options(prot=25), "prot"),
    ("Policy.from_url type", lambda: syncsmtp.Policy.from_url(5), "url"),  # type: ignore[arg-type]
    ("Policy.from_url scheme", lambda: syncsmtp.Policy.from_url("http://h"), "url"),
    ("Policy.from_url option", lambda: syncsmtp.Policy.from_url("smtp://h?bogus=1"), "url"),
    ("Policy.from_url port", lambda: syncsmtp.Policy.from_url("smtp://h:99999"), "url"),
    ("send policy", lambda: syncsmtp.send(_message(), "smtp://h"), "policy"),  # type: ignore[arg-type]
    ("send timeout", lambda: syncsmtp.send(_message(), POLICY, timeout=0), "timeout"),
    ("send timeout type", lambda: syncsmtp.send(_message(), POLICY, timeout="5"), "timeout"),  # type: ignore[arg-type]
    ("check policy", lambda: syncsmtp.check("smtp://h"), "policy"),  # type: ignore[arg-type]
    ("check timeout", lambda: syncsmtp.check(POLICY, timeout=float("inf")), "timeout"),
    ("Mailer policy", lambda: syncsmtp.Mailer("smtp://h"), "policy"),  # type: ignore[arg-type]
    ("Mailer connections", lambda: syncsmtp.Mailer(POLICY, connections=0), "connections"),
    ("Mailer idle_timeout", lambda: syncsmtp.Mailer(POLICY, idle_timeout=0), "idle_timeout"),
    ("Mailer.open timeout", _mailer("open", timeout=-1), "timeout"),
    ("Mailer.send timeout", _mailer("send", _message(), timeout=0), "timeout"),
    ("Mailer.close timeout", _mailer("close", timeout=0), "timeout"),
    ("send_many messages", _mailer("send_many", _message()), "messages"),
    ("send_many messages type", _mailer("send_many", 5), "messages"),
    ("send_many timeout", _mailer("send_many", [], timeout=0), "timeout"),
    ("send_many rate", _mailer("send_many", [], rate=0), "rate"),
    ("send_many rate bool", _mailer("send_many", [], rate=True), "rate"),
    ("send_many retries", _mailer("send_many", [], retries=-1), "retries"),
    ("send_many backoff", _mailer("send_many", [], backoff=0), "backoff"),
    ("send_many progress", _mailer("send_many", [], progress="yes"), "progress"),
]

# The other parameters of each call: a message must not name one of them instead.
PARAMETERS = {
    "Mailer": ("policy", "connections", "idle_timeout"),
    "send_many": ("messages", "timeout", "rate", "retries", "backoff", "progress"),
    "send": ("message", "policy", "timeout", "sender", "recipients"),
    "check": ("policy", "timeout"),
}


@pytest.mark.parametrize(("case", "call", "parameter"), CHECKS, ids=[case for case, _, _ in CHECKS])
def test_each_argument_check_names_its_parameter(
    case: str, call: Callable[[], object], parameter: str
) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        call()
    text = str(caught.value)

    def named(word: str) -> bool:
        return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text) is not None

    assert named(parameter), text
    call_name = case.split()[0]
    others = [p for p in PARAMETERS.get(call_name, ()) if p != parameter]
    assert not any(named(other) for other in others), text


def test_a_secret_is_not_repeated_by_its_check() -> None:
    with pytest.raises(ValueError) as caught:
        syncsmtp.Policy(host="h", username="u", password="Hunter2\nSecret")
    assert "Hunter2" not in str(caught.value) and "password" in str(caught.value)
