"""The link's certificates against the calendar: expired, not yet valid, or expiring soon.

A certificate outside its dates loads without complaint (nng's mbedTLS
checks dates only in the peer's certificate, during the handshake), so a
cloud with an expired one listens as if all were well, and the edges see
only a failed handshake that can't say why. So the system checks
(fogsite/checks.py), runcloud, runedge and the edge's diagnosis of a failed
handshake (edge_app/link.py) read the dates from the files here, each
certificate in a PEM file (a key in it is skipped). A file that holds no
readable certificate counts as nothing here: loading it fails with its own
message (fogwire/tls.py).
"""

import datetime
import os

from django.conf import settings

# A certificate that expires within this many days is a warning (fog.W013): time to renew it without an outage.
EXPIRY_WARNING_DAYS = 30
# The settings that name the link's certificate files, in the order their problems are reported.
TLS_FILE_SETTINGS = ("FOG_CLOUD_TLS_CERT", "FOG_EDGE_TLS_CERT", "FOG_TLS_CA")


def _certificates(path):
    if not os.path.isfile(path):  # missing, a folder or a pipe: fog.E011's to name, and nothing to wait on here
        return []
    # Here, not at the top: every command imports this module for its checks, and most read no certificate.
    from cryptography import x509

    try:
        with open(path, "rb") as file:
            return x509.load_pem_x509_certificates(file.read())
    except (OSError, ValueError):
        return []


def _when(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _whose(cert, several):
    """'the certificate' alone in its file; in a bundle (a CA file) which one, by its common name."""
    if not several:
        return "the certificate"
    from cryptography import x509

    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return f"the certificate of {names[0].value}" if names else f"the certificate {cert.subject.rfc4514_string()}"


def _dated(cert, several, now):
    """(serious, what) for one certificate, or None while it is valid for longer than EXPIRY_WARNING_DAYS."""
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    whose = _whose(cert, several)
    if now > after:
        return True, f"{whose} expired on {_when(after)} (notAfter)"
    if now < before:
        return True, f"{whose} is not valid before {_when(before)} (notBefore)"
    left = after - now
    if left < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        days = -(-left // datetime.timedelta(days=1))  # begun days: 5 hours left is "in 1 day", not "in 0 days"
        return False, f"{whose} expires on {_when(after)} (notAfter), in {days} day{'s' * (days != 1)}"
    return None


def file_problem(path, now=None, bundle=False):
    """(serious, what) for the first certificate in the PEM file at `path` outside its dates (serious) or
    expiring within EXPIRY_WARNING_DAYS; None if none is. In a `bundle` of CAs one out of date is only a
    warning while another of its name is in date: the handshake takes that one (the end of a CA rotation)."""
    now = now or datetime.datetime.now(datetime.UTC)
    certificates = _certificates(path)
    found = [problem for cert in certificates if (problem := _dated(cert, len(certificates) > 1, now))]
    if not found:
        return None
    serious, what = min(found, key=lambda problem: not problem[0])  # an error before a warning
    if serious and bundle and all(_replaced(cert, certificates, now) for cert in certificates
                                  if not _in_date(cert, now)):
        return False, f"{what}; a certificate of the same name in the file is in date, and handshakes take that"
    return serious, what


def _in_date(cert, now):
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _replaced(cert, certificates, now):
    """Whether another certificate of `cert`'s subject in the file is in date: a CA renewed, the old one not
    yet taken out (an intermediate expired alone is no such thing: every chain through it fails)."""
    return any(other is not cert and other.subject == cert.subject and _in_date(other, now) for other in certificates)


def setting_problem(name, now=None):
    """(serious, 'NAME=path: what') for the certificate file a setting names, or None (unset, or its dates fine)."""
    path = getattr(settings, name)
    problem = file_problem(path, now, bundle=name == "FOG_TLS_CA") if path else None
    return problem and (problem[0], f"{name}={path}: {problem[1]}")


def refusal(*names):
    """One line on the first of these settings' certificates that is expired or not yet valid, or ''."""
    for name in names:
        problem = setting_problem(name)
        if problem and problem[0]:
            return f"{problem[1]}: handshakes that check it fail; renew it, or set this host's clock right"
    return ""
