"""A development certificate authority and the cloud's and edges' certificates for TLS on the link.

Each certificate is written with its private key in one PEM file (what
pynng's `cert_key_file` reads); the CA's certificate goes to `ca.pem` for
both sides to verify the other. Keys are EC P-256: small, fast handshakes,
supported by nng's mbedTLS. For production, use your own CA: these files
are for a deployment's first steps and for tests.
"""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825  # the longest validity common TLS clients accept for a leaf certificate
CA_VALID_DAYS = 3650


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fog pipeline (development)"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(names):
    entries = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject, issuer, public_key, days):
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def make_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name("fog pipeline development CA"), _name("fog pipeline development CA"), key.public_key(),
                     CA_VALID_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert, common_name, names, *, server):
    """A certificate for `names` (host names or IP addresses), for a server (the cloud) or a client (an edge)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (_builder(_name(common_name), ca_cert.subject, key.public_key(), VALID_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(_san(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def write_set(folder, cloud_names, edge_ids, *, force=False):
    """Write ca.pem, ca-key.pem, cloud.pem and edge-<id>.pem into `folder`; returns the paths written.

    An existing CA is reused (so edges made later still trust the same
    cloud) unless `force`; key files are readable by their owner only.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = folder / "ca.pem", folder / "ca-key.pem"
    if ca_path.exists() and ca_key_path.exists() and not force:
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        written = []
    else:
        ca_key, ca_cert = make_ca()
        _write(ca_key_path, _pem_key(ca_key), private=True)
        _write(ca_path, _pem_cert(ca_cert), private=False)
        written = [ca_path, ca_key_path]
    if cloud_names:
        key, cert = make_leaf(ca_key, ca_cert, cloud_names[0], cloud_names, server=True)
        written.append(_write(folder / "cloud.pem", _pem_key(key) + _pem_cert(cert), private=True))
    for edge_id in edge_ids:
        key, cert = make_leaf(ca_key, ca_cert, edge_id, [edge_id], server=False)
        written.append(_write(folder / f"edge-{edge_id}.pem", _pem_key(key) + _pem_cert(cert), private=True))
    return written


def _write(path, data, *, private):
    path.touch(mode=0o600 if private else 0o644, exist_ok=True)
    path.chmod(0o600 if private else 0o644)
    path.write_bytes(data)
    return path
