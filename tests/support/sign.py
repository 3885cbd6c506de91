#!/usr/bin/env python3
"""Notary Project signatures for tests/provenance.rs, made independently of the code under test.

COSE envelopes are built with pycose (COSE_Sign1), JWS envelopes and every key, certificate and
signature with cryptography, and RFC 3161 timestamp tokens (CMS SignedData over a TSTInfo) with
asn1crypto, following the Notary Project specifications (signature-envelope-cose.md,
signature-envelope-jws.md, signature-specification.md). Versions pinned in
tests/support/requirements.txt, installed by scripts/setup.sh test.

    sign.py pki DIR
        Writes a PKI into DIR: a trusted CA and a TSA root (in the trust store layout under
        DIR/truststore/x509/{ca,tsa}/test/), an untrusted CA, and signing certificates with their
        keys: leaf (CN=Signer, ST=WA, O=Test, C=US; valid now), expired (CN=Signer, valid only during 2020), other
        (CN=Intruder, trusted CA) and rogue (CN=Signer, untrusted CA).

    sign.py sign DIR OUT --format cose|jws --subject JSON --cert NAME [--timestamp]
                         [--critical-extra] [--digest DIGEST]
        Signs a payload naming the subject descriptor JSON ({"mediaType","digest","size"}) with
        the signing certificate NAME and writes the envelope to OUT. --timestamp adds a
        timestamp countersignature from the TSA (at the signing time); --critical-extra marks an
        unknown protected header critical; --digest names another digest in the payload (a
        tampered signature).
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import sys

import cbor2
from asn1crypto import algos, cms, core, tsp, x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pycose.algorithms import Es256
from pycose.headers import Algorithm, ContentType, Critical, X5chain
from pycose.keys import EC2Key
from pycose.messages import Sign1Message

UTC = datetime.timezone.utc
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
# The signing time of expired certificates' signatures: inside their validity, long ago.
PAST = datetime.datetime(2020, 6, 1, tzinfo=UTC)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "US")])


def cert(subject_cn, key, issuer_cert, issuer_key, not_before, not_after, ca=False, eku=None):
    b = (x509.CertificateBuilder().subject_name(name(subject_cn))
         .issuer_name(issuer_cert.subject if issuer_cert else name(subject_cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False, key_agreement=False,
                                      encipher_only=False, decipher_only=False), critical=True))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=eku == ExtendedKeyUsageOID.TIME_STAMPING)
    return b.sign(issuer_key or key, hashes.SHA256())


def write_pem(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(obj, x509.Certificate):
        data = obj.public_bytes(serialization.Encoding.PEM)
    else:
        data = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    with open(path, "wb") as f:
        f.write(data)


def pki(d):
    now = datetime.datetime.now(UTC)
    long_ago, far = datetime.datetime(2019, 1, 1, tzinfo=UTC), now + datetime.timedelta(days=3650)
    k = lambda: ec.generate_private_key(ec.SECP256R1())
    ca_key, rogue_key, tsa_root_key, tsa_key = k(), k(), k(), k()
    ca = cert("Test Root CA", ca_key, None, None, long_ago, far, ca=True)
    rogue = cert("Test Root CA", rogue_key, None, None, long_ago, far, ca=True)
    tsa_root = cert("Test TSA Root", tsa_root_key, None, None, long_ago, far, ca=True)
    tsa = cert("Test TSA", tsa_key, tsa_root, tsa_root_key, long_ago, far, eku=ExtendedKeyUsageOID.TIME_STAMPING)
    write_pem(f"{d}/truststore/x509/ca/test/ca.pem", ca)
    write_pem(f"{d}/truststore/x509/tsa/test/tsa-root.pem", tsa_root)
    write_pem(f"{d}/tsa.pem", tsa)
    write_pem(f"{d}/tsa-root.pem", tsa_root)
    write_pem(f"{d}/tsa.key", tsa_key)
    signing = ExtendedKeyUsageOID.CODE_SIGNING
    leaves = {
        "leaf": ("Signer", ca, ca_key, now - datetime.timedelta(days=1), far),
        "expired": ("Signer", ca, ca_key, datetime.datetime(2020, 1, 1, tzinfo=UTC), datetime.datetime(2021, 1, 1, tzinfo=UTC)),
        "other": ("Intruder", ca, ca_key, now - datetime.timedelta(days=1), far),
        "rogue": ("Signer", rogue, rogue_key, now - datetime.timedelta(days=1), far),
    }
    for n, (cn, issuer, issuer_key, nb, na) in leaves.items():
        key = k()
        write_pem(f"{d}/{n}.key", key)
        write_pem(f"{d}/{n}.pem", cert(cn, key, issuer, issuer_key, nb, na, eku=signing))
        write_pem(f"{d}/{n}-ca.pem", issuer)


def load(d, n):
    with open(f"{d}/{n}.pem", "rb") as f:
        c = x509.load_pem_x509_certificate(f.read())
    with open(f"{d}/{n}.key", "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return c, key


def der(c):
    return c.public_bytes(serialization.Encoding.DER)


def timestamp_token(d, signature, when):
    """An RFC 3161 TimeStampToken over sha256(signature), as a TSA answers with certReq: the TSA's
    certificate in the SignedData, signed attributes contentType, messageDigest and
    signingCertificateV2 (RFC 5816)."""
    tsa, tsa_key = load(d, "tsa")
    info = tsp.TSTInfo({
        "version": "v1",
        "policy": "1.2.3.4.1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": hashlib.sha256(signature).digest()},
        "serial_number": int.from_bytes(os.urandom(8), "big"),
        "gen_time": when,
        "accuracy": {"seconds": 1},
        "nonce": int.from_bytes(os.urandom(8), "big"),
    })
    info_der = info.dump()
    tsa_a = ax509.Certificate.load(der(tsa))
    attrs = cms.CMSAttributes([
        {"type": "content_type", "values": ["tst_info"]},
        {"type": "message_digest", "values": [hashlib.sha256(info_der).digest()]},
        {"type": "signing_certificate_v2", "values": [{"certs": [{"cert_hash": hashlib.sha256(der(tsa)).digest()}]}]},
    ])
    sig = tsa_key.sign(attrs.dump(), ec.ECDSA(hashes.SHA256()))
    signer = cms.SignerInfo({
        "version": "v1",
        "sid": {"issuer_and_serial_number": {"issuer": tsa_a.issuer, "serial_number": tsa_a.serial_number}},
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": attrs,
        "signature_algorithm": {"algorithm": "sha256_ecdsa"},
        "signature": sig,
    })
    signed = cms.SignedData({
        "version": "v3",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "tst_info", "content": core.ParsableOctetString(info_der)},
        "certificates": [tsa_a],
        "signer_infos": [signer],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()


def sign(args):
    leaf, key = load(args.dir, args.cert)
    with open(f"{args.dir}/{args.cert}-ca.pem", "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    chain = [der(leaf), der(ca)]
    subject = json.loads(args.subject)
    if args.digest:
        subject["digest"] = args.digest
    payload = json.dumps({"targetArtifact": subject}, separators=(",", ":")).encode()
    now = datetime.datetime.now(UTC).replace(microsecond=0)
    signing_time = PAST if args.cert == "expired" else now
    critical = ["io.cncf.notary.signingScheme"] + (["io.example.unknownCritical"] if args.critical_extra else [])
    if args.format == "cose":
        phdr = {Algorithm: Es256, Critical: critical, ContentType: PAYLOAD_TYPE,
                "io.cncf.notary.signingScheme": "notary.x509",
                "io.cncf.notary.signingTime": cbor2.CBORTag(1, int(signing_time.timestamp()))}
        if args.critical_extra:
            phdr["io.example.unknownCritical"] = "must be understood"
        msg = Sign1Message(phdr=phdr, uhdr={X5chain: chain, "io.cncf.notary.signingAgent": "sign.py/1.0"},
                           payload=payload)
        msg.key = EC2Key._from_cryptography_key(key)
        envelope = msg.encode(tag=True)
        if args.timestamp:
            decoded = cbor2.loads(envelope)
            fields = list(decoded.value)
            unprotected = dict(fields[1])
            unprotected["io.cncf.notary.timestampSignature"] = timestamp_token(args.dir, fields[3], signing_time)
            fields[1] = unprotected
            envelope = cbor2.dumps(cbor2.CBORTag(decoded.tag, fields))
    else:
        protected = {"alg": "ES256", "crit": critical, "cty": PAYLOAD_TYPE,
                     "io.cncf.notary.signingScheme": "notary.x509",
                     "io.cncf.notary.signingTime": signing_time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        if args.critical_extra:
            protected["io.example.unknownCritical"] = "must be understood"
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        p, pl = b64(json.dumps(protected).encode()), b64(payload)
        r, s = decode_dss_signature(key.sign(f"{p}.{pl}".encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        header = {"x5c": [base64.b64encode(c).decode() for c in chain], "io.cncf.notary.signingAgent": "sign.py/1.0"}
        if args.timestamp:
            header["io.cncf.notary.timestampSignature"] = base64.b64encode(
                timestamp_token(args.dir, signature, signing_time)).decode()
        envelope = json.dumps({"payload": pl, "protected": p, "header": header, "signature": b64(signature)}).encode()
    with open(args.out, "wb") as f:
        f.write(envelope)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pki")
    p.add_argument("dir")
    s = sub.add_parser("sign")
    s.add_argument("dir")
    s.add_argument("out")
    s.add_argument("--format", choices=["cose", "jws"], required=True)
    s.add_argument("--subject", required=True)
    s.add_argument("--cert", default="leaf")
    s.add_argument("--timestamp", action="store_true")
    s.add_argument("--critical-extra", action="store_true")
    s.add_argument("--digest")
    a = ap.parse_args()
    if a.cmd == "pki":
        pki(a.dir)
    else:
        sign(a)


if __name__ == "__main__":
    sys.exit(main())
