"""A certificate out of its dates is named before the edges fail, and by the edge when they do.

nng loads an expired certificate without complaint and the handshake's
failure says nothing about dates, so `check` names the setting, the file
and the date (fog.E014; fog.W013 within EXPIRY_WARNING_DAYS), runcloud and
runedge refuse to start in one line, and the edge's probe of a failed
handshake names dates among the causes, or its own certificate when that
is the one out of date. Real certificates from a real CA (fogsite.certs),
re-signed with the dates each case needs; real pynng TLS sockets.
"""

import datetime

import pynng
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from edge_app.link import probe
from fogsite import certs
from fogsite.certdates import EXPIRY_WARNING_DAYS
from fogsite.checks import check_pipeline_settings
from fogwire import tls as wire_tls
from tests.conftest import free_port, run_manage

DAY = datetime.timedelta(days=1)
# (notBefore, notAfter) from now, per case.
DATES = {"expired": (-90 * DAY, -DAY), "not yet valid": (DAY, 90 * DAY),
         "expiring soon": (-90 * DAY, 10 * DAY), "valid": (-DAY, 2 * EXPIRY_WARNING_DAYS * DAY)}


def _pem(cert, key=None):
    """A PEM file's bytes: the key (if any) and the certificate, as makecerts writes them."""
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if key is None:
        return pem
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + pem


class CA:
    """A development CA in a folder, signing certificates with the dates a case needs."""

    def __init__(self, folder):
        self.folder = folder
        self.key, self.cert = certs.make_ca()
        self.path = folder / "ca.pem"
        self.path.write_bytes(_pem(self.cert))

    def leaf(self, name, case, *, server):
        """Write `name`.pem (key and certificate) valid as DATES[case] says; returns (path, notBefore, notAfter)."""
        key, cert = certs.make_leaf(self.key, self.cert, "127.0.0.1" if server else name,
                                    ["127.0.0.1"] if server else [name], server=server)
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        before, after = (now + offset for offset in DATES[case])
        builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
                   .public_key(cert.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(before).not_valid_after(after))
        for extension in cert.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        path = self.folder / f"{name}.pem"
        path.write_bytes(_pem(builder.sign(self.key, hashes.SHA256()), key))
        return path, before, after


def _utc(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@pytest.fixture
def ca(tmp_path):
    return CA(tmp_path)


def _tls_issues():
    return [(issue.id, issue.msg) for issue in check_pipeline_settings(None) if issue.id in ("fog.E014", "fog.W013")]


@pytest.mark.parametrize("name", ["FOG_CLOUD_TLS_CERT", "FOG_EDGE_TLS_CERT"])
@pytest.mark.parametrize("case", list(DATES))
def test_it_checks_the_dates_of_each_certificate_setting(name, case, ca, settings):
    path, before, after = ca.leaf("link", case, server=name == "FOG_CLOUD_TLS_CERT")
    settings.FOG_TLS_CA = str(ca.path)
    setattr(settings, name, str(path))
    expected = {
        "expired": [("fog.E014", f"{name}={path}: the certificate expired on {_utc(after)} (notAfter).")],
        "not yet valid": [("fog.E014", f"{name}={path}: the certificate is not valid before {_utc(before)} "
                                       "(notBefore).")],
        "expiring soon": [("fog.W013", f"{name}={path}: the certificate expires on {_utc(after)} (notAfter), "
                                       "in 10 days.")],
        "valid": [],
    }[case]
    assert _tls_issues() == expected


def test_it_checks_the_dates_of_the_ca(tmp_path, settings):
    old = CA(tmp_path)
    now = datetime.datetime.now(datetime.UTC)
    old.cert = (x509.CertificateBuilder().subject_name(old.cert.subject).issuer_name(old.cert.subject)
                .public_key(old.key.public_key()).serial_number(1).not_valid_before(now - 9 * DAY)
                .not_valid_after(now - DAY).sign(old.key, hashes.SHA256()))
    old.path.write_bytes(_pem(old.cert))
    settings.FOG_TLS_CA = str(old.path)
    [(check_id, message)] = _tls_issues()
    assert check_id == "fog.E014"
    assert message == f"FOG_TLS_CA={old.path}: the certificate expired on {_utc(old.cert.not_valid_after_utc)} (notAfter)."


def test_it_only_warns_of_an_expired_ca_beside_one_in_date_in_the_same_file(tmp_path, settings):
    """The end of a CA rotation: the handshake takes the CA in date, so nothing may refuse to start for the old one."""
    for folder in ("old", "new"):
        (tmp_path / folder).mkdir()
    old, new = CA(tmp_path / "old"), CA(tmp_path / "new")
    now = datetime.datetime.now(datetime.UTC)
    expired = (x509.CertificateBuilder().subject_name(old.cert.subject).issuer_name(old.cert.subject)
               .public_key(old.key.public_key()).serial_number(1).not_valid_before(now - 9 * DAY)
               .not_valid_after(now - DAY).sign(old.key, hashes.SHA256()))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(_pem(expired) + _pem(new.cert))
    settings.FOG_TLS_CA = str(bundle)
    [(check_id, message)] = _tls_issues()
    assert check_id == "fog.W013" and "expired on" in message and "of the same name in the file is in date" in message


def test_it_refuses_an_expired_certificate_in_a_ca_file_that_nothing_in_it_replaces(ca, tmp_path, settings):
    """An intermediate expired beside its root in date: every chain through it fails."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "fog intermediate")])
    intermediate = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.cert.subject)
                    .public_key(ca.key.public_key()).serial_number(7).not_valid_before(now - 9 * DAY)
                    .not_valid_after(now - DAY).sign(ca.key, hashes.SHA256()))
    bundle = tmp_path / "chain.pem"
    bundle.write_bytes(_pem(ca.cert) + _pem(intermediate))
    settings.FOG_TLS_CA = str(bundle)
    [(check_id, message)] = _tls_issues()
    assert check_id == "fog.E014" and "the certificate of fog intermediate expired on" in message


def test_it_fails_check_on_an_expired_cloud_certificate(ca):
    path, _, after = ca.leaf("cloud-expired", "expired", server=True)
    result = run_manage("check", env={"FOG_CLOUD_BIND": "127.0.0.2", "FOG_CLOUD_TLS_CERT": str(path),
                                      "FOG_TLS_CA": str(ca.path), "FOG_TLS_MUTUAL": "1"})
    assert result.returncode == 1, result.stdout
    assert f"(fog.E014) FOG_CLOUD_TLS_CERT={path}: the certificate expired on {_utc(after)}" in result.stderr


def test_it_makes_new_certificates_while_the_configured_ones_are_out_of_date(ca, tmp_path):
    path, _, _ = ca.leaf("cloud", "expired", server=True)
    result = run_manage("makecerts", "--dir", str(tmp_path / "tls"),
                        env={"FOG_CLOUD_TLS_CERT": str(path), "FOG_TLS_CA": str(ca.path)})
    assert result.returncode == 0, result.stderr  # the command that mends it is not refused for it
    assert (tmp_path / "tls" / "cloud.pem").exists()


@pytest.mark.parametrize("case", ["expired", "not yet valid"])
def test_it_refuses_to_start_the_cloud_in_one_line(case, ca):
    path, before, after = ca.leaf("cloud", case, server=True)
    result = run_manage("runcloud", "--until", "1", "--heartbeat-port", str(free_port()), "--data-port",
                        str(free_port()), env={"FOG_CLOUD_TLS_CERT": str(path), "FOG_TLS_CA": str(ca.path)},
                        timeout=60)
    assert result.returncode == 1
    date = f"expired on {_utc(after)}" if case == "expired" else f"is not valid before {_utc(before)}"
    assert result.stderr.strip().splitlines() == [
        f"CommandError: TLS: FOG_CLOUD_TLS_CERT={path}: the certificate {date} "
        f"(not{'After' if case == 'expired' else 'Before'}): handshakes that check it fail; renew it, or set this "
        "host's clock right"]


def test_it_starts_an_edge_with_its_own_expired_certificate_and_says_so_in_one_line(ca, edge_env):
    """The ingest needs no certificate: refusing to start would leave the readings to age in Kafka."""
    path, _, after = ca.leaf("edge-1", "expired", server=False)
    result = run_manage("runedge", "--burst", "--timeout", "3", "--topic", f"none-{free_port()}",
                        env={**edge_env, "FOG_TLS_CA": str(ca.path), "FOG_EDGE_TLS_CERT": str(path)}, timeout=90)
    said = [line for line in result.stderr.splitlines() if "the certificate expired" in line]
    assert len(said) == 1 and f"ERROR fog.edge: TLS: FOG_EDGE_TLS_CERT={path}: the certificate expired on " \
        f"{_utc(after)}" in said[0] and "once it is renewed and runedge started again" in said[0], result.stderr
    assert "the run ended as timeout" in result.stderr  # it ran (its topic never came), not refused
    # Its workers, and any it starts again later, run no system check: runedge checked at its start.
    assert "worker_starts=3;" in result.stdout, result.stdout


def _probe(server_cert, ca, client_cert=None):
    address = f"tls+tcp://127.0.0.1:{free_port()}"
    cloud = pynng.Rep0(tls_config=wire_tls.server_config(server_cert, ca.path, mutual=client_cert is not None),
                       listen=address)
    try:
        return probe(address, wire_tls.client_config(ca.path, "127.0.0.1", client_cert))
    finally:
        cloud.close()


def test_it_names_dates_among_the_causes_of_a_failed_handshake(ca, settings):
    cloud_cert, _, _ = ca.leaf("cloud", "expired", server=True)
    settings.FOG_TLS_CA, settings.FOG_EDGE_TLS_CERT = str(ca.path), ""
    found = _probe(cloud_cert, ca)
    assert "the TLS handshake failed (" in found
    assert "a certificate expired or not yet valid (on either side; check the clocks too)" in found


@pytest.mark.parametrize("case", ["expired", "not yet valid"])
def test_it_says_the_edges_own_certificate_is_out_of_date(case, ca, settings):
    cloud_cert, _, _ = ca.leaf("cloud", "valid", server=True)
    edge_cert, before, after = ca.leaf("edge-1", case, server=False)
    settings.FOG_TLS_CA, settings.FOG_EDGE_TLS_CERT = str(ca.path), str(edge_cert)
    found = _probe(cloud_cert, ca, edge_cert)
    date = f"expired on {_utc(after)}" if case == "expired" else f"is not valid before {_utc(before)}"
    assert f": the TLS handshake failed: FOG_EDGE_TLS_CERT={edge_cert}: the certificate {date}" in found
    assert "FOG_TLS_SERVER_NAME" not in found  # not the causes it can rule out
