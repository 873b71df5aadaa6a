"""What DKIM signing costs in the caller's thread: per 1 KiB message, and in memory for a large one.

Run by hand (not part of the test suite)::

    python tests/benchmarks/bench_dkim.py [--count 500] [--rounds 5] [--large-mib 10]

For an RSA-2048 key and an Ed25519 key (made at start with ``cryptography``),
prints the median over rounds of: ``DKIM.sign()`` on the message's wire bytes
alone, and the extra time that ``dkim=`` adds to preparing a message for a send
(``prepare_message`` with and without it: the signing plus joining the data
into one piece). Then, for a ``--large-mib`` MiB message, the peak of memory
allocated (``tracemalloc``) while preparing it, without and with signing.
Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import email.message
import functools
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from importlib.metadata import version

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

import syncsmtp
from syncsmtp.message import prepare_message


def make_message(body: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "bench@example.com"
    message["To"] = "sink@example.com"
    message["Subject"] = "benchmark"
    message.set_content(body)
    return message


def one_kib_message() -> email.message.EmailMessage:
    return make_message(("0123456789abcdef" * 4 + "\n") * 16)  # 1040 bytes of body


def signers() -> dict[str, syncsmtp.DKIM]:
    plain = serialization.NoEncryption()
    keys: dict[str, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey] = {
        "rsa-2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    return {
        name: syncsmtp.DKIM("example.com", "bench", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, plain))
        for name, key in keys.items()
    }


def per_call_us(call: Callable[[], object], count: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean time of one call, in µs."""
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            call()
        results.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(results)


def peak_mib(call: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--large-mib", type=int, default=10, help="size of the large message (0: skip)")
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, dkimpy {version('dkimpy')}, "
          f"PyNaCl {version('pynacl')}, cryptography {version('cryptography')}")

    message = one_kib_message()
    wire = prepare_message(message).data
    print(f"1 KiB message ({len(wire)} bytes on the wire), {args.rounds} rounds of {args.count}:")
    unsigned = per_call_us(lambda: prepare_message(message), args.count, args.rounds)
    print(f"  prepare_message without dkim:      {unsigned:8.1f} µs")
    for name, signer in signers().items():
        sign = per_call_us(functools.partial(signer.sign, wire), args.count, args.rounds)
        prepared = per_call_us(functools.partial(prepare_message, message, dkim=signer),
                               args.count, args.rounds)
        print(f"  {name:8} DKIM.sign():             {sign:8.1f} µs")
        print(f"  {name:8} dkim= adds to prepare:   {prepared - unsigned:8.1f} µs")

    if args.large_mib:
        line = "abcdefghij" * 7 + "\n"
        large = make_message(line * (args.large_mib * 2**20 // len(line)))
        size = len(prepare_message(large).data) / 2**20
        signer = next(iter(signers().values()))
        print(f"{size:.1f} MiB message, peak memory allocated while preparing it:")
        print(f"  without dkim: {peak_mib(lambda: prepare_message(large)):6.1f} MiB")
        print(f"  with dkim:    {peak_mib(lambda: prepare_message(large, dkim=signer)):6.1f} MiB")


if __name__ == "__main__":
    main()
