"""``image-factory``: the evidence of published images from a shell, with no Airflow needed.

    image-factory keygen --out signing          # signing.pem (0600) + signing.pub.pem, and the Connection
    image-factory verify REGISTRY/REPO:TAG --public-key signing.pub.pem [--username U --password-stdin]

``verify`` checks every platform of the name (and an index's own evidence): DSSE signatures by a trusted
key, an SBOM, provenance naming the commit of the image's ``org.opencontainers.image.revision`` label, tests
PASSED. Exit 0 when all verify, 1 when any problem is found, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.clients.signing import EvidenceVerifier, generate_key_pair
from airflow_image_factory.exceptions import ImageFactoryError
from airflow_image_factory.policy.evidence import NAMES
from airflow_image_factory.policy.reference import parse_reference
from airflow_image_factory.services.evidence import verify_image


def keygen(out: str, connection_id: str) -> int:
    private_pem, public_pem = generate_key_pair()
    private_path, public_path = Path(f"{out}.pem"), Path(f"{out}.pub.pem")
    for path in (private_path, public_path):
        if path.exists():
            print(f"image-factory: {path} exists; not overwritten", file=sys.stderr)
            return 2
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(private_pem)
    public_path.write_text(public_pem)
    print(f"private key: {private_path} (mode 0600; keep it in your secrets backend, not in a repository)")
    print(f"public key:  {public_path} (give it to whoever verifies your images)")
    print("store the private key as the signing Connection, e.g.:")
    print(f"  airflow connections add {connection_id} --conn-type generic --conn-password \"$(cat {private_path})\"")
    return 0


def verify(ref: str, public_keys: list[str], username: str | None, password: str | None, scheme: str | None,
           as_json: bool) -> int:
    verifier = EvidenceVerifier.from_pems(Path(path).read_text() for path in public_keys)
    parsed = parse_reference(ref)
    with RegistryClient(parsed.registry, username=username, password=password, scheme=scheme) as client:
        found = verify_image(client, parsed.repository, parsed.reference, verifier)
    if as_json:
        print(json.dumps([e.to_dict() for e in found], indent=2))
    for evidence in found:
        where = f"{ref} ({evidence.platform})" if evidence.platform else ref
        if evidence.verdict.ok:
            kinds = ", ".join(NAMES[k] for k in evidence.verdict.accepted)
            source = f"commit {evidence.revision}" if evidence.revision else "no revision label (a release build)"
            print(f"OK   {where} {evidence.digest}: {kinds} signed by a trusted key; {source}",
                  file=sys.stderr if as_json else sys.stdout)
        else:
            for problem in evidence.verdict.problems:
                print(f"FAIL {where} {evidence.digest}: {problem}", file=sys.stderr if as_json else sys.stdout)
    return 0 if found and all(e.verdict.ok for e in found) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image-factory", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("keygen", help="make an ed25519 signing key pair")
    make.add_argument("--out", default="image-factory-signing", help="file prefix (default: %(default)s)")
    make.add_argument("--connection-id", default="image_factory_signing")
    check = commands.add_parser("verify", help="verify the signed evidence of a published image")
    check.add_argument("image", help="registry/repository:tag or registry/repository@sha256:...")
    check.add_argument("--public-key", action="append", required=True, help="trusted PEM public key (repeatable)")
    check.add_argument("--username")
    check.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")
    check.add_argument("--scheme", choices=("http", "https"), help="default: http for loopback, else https")
    check.add_argument("--json", action="store_true", help="print the reports as JSON on stdout")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            return keygen(args.out, args.connection_id)
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
        return verify(args.image, args.public_key, args.username, password, args.scheme, args.json)
    except (ImageFactoryError, OSError, ValueError) as exc:
        print(f"image-factory: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ImageFactoryError) else 2


if __name__ == "__main__":
    sys.exit(main())
