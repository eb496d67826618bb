"""TLS for the link: pynng TLS configs for the cloud (server) and an edge (client), from file paths.

The cloud presents `cert` (its key and certificate in one PEM file); with
`mutual` it also demands a certificate signed by `ca` from every edge. An
edge verifies the cloud's certificate against `ca` and the name it dials
(`server_name`), and presents its own `cert` when given. Addresses become
tls+tcp:// whenever a config is in use. Imports neither app nor Django.

`python -m fogwire.tls CA SERVER_NAME [CERT]` builds an edge's config and
prints TLS_OK, or what is wrong with its files (exit status TLS_UNUSABLE),
for a process that must not start nng itself.
"""

import sys

import pynng

TLS_OK, TLS_UNUSABLE = "ok", 3  # what `python -m fogwire.tls` prints for usable files, its exit status otherwise


class TLSSetupError(ValueError):
    """A certificate file is missing or unusable; the message names it."""


def _config(build, what, path):
    try:
        return build()
    except pynng.NNGException as exc:
        raise TLSSetupError(f"{what} {path}: {exc} (a PEM file with the key and certificate, or a CA certificate)") \
            from None


def server_config(cert, ca=None, mutual=False):
    if mutual and not ca:
        raise TLSSetupError("mutual TLS needs the CA certificate that signed the edges' certificates")
    config = _config(lambda: pynng.TLSConfig(pynng.TLSConfig.MODE_SERVER, cert_key_file=str(cert)), "certificate", cert)
    if ca:
        _config(lambda: config.add_ca_file(str(ca)), "CA file", ca)
    config.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED if mutual else pynng.TLSConfig.AUTH_MODE_NONE)
    return config


def client_config(ca, server_name, cert=None):
    config = _config(lambda: pynng.TLSConfig(pynng.TLSConfig.MODE_CLIENT, server_name=server_name, ca_files=[str(ca)]),
                     "CA file", ca)
    if cert:
        _config(lambda: config.set_cert_key_file(str(cert)), "certificate", cert)
    config.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED)
    return config


def address(host, port, tls):
    scheme = "tls+tcp" if tls else "tcp"
    return f"{scheme}://{host}:{port}"


if __name__ == "__main__":
    try:
        client_config(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None)
    except TLSSetupError as exc:
        print(exc)
        sys.exit(TLS_UNUSABLE)
    print(TLS_OK)
