"""The cloud's list of edges allowed to deliver: `id:secret` pairs, inline or from a file."""

MIN_SECRET_BYTES = 32  # an edge secret on a reachable cloud: 256 bits, the HMAC-SHA256 tag's own strength


def edge_secrets_text(inline, path):
    """The id:secret pairs' text: from the file at `path` when set (OSError if unreadable), else `inline`."""
    if not path:
        return inline
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def parse_edge_secrets(text):
    """{edge id: secret} from `id:secret` pairs separated by commas or new lines.

    Returns (pairs, bad) where bad lists the edge ids (never the secrets) of
    entries that are not pairs, so a message can name them safely.
    """
    pairs, bad = {}, []
    for item in filter(None, (p.strip() for p in text.replace("\n", ",").split(","))):
        if item.startswith("#"):
            continue
        edge_id, sep, secret = item.partition(":")
        if not sep or not edge_id.strip() or not secret.strip():
            bad.append(edge_id.strip() or "?")
        else:
            pairs[edge_id.strip()] = secret.strip()
    return pairs, bad


def weak_secrets(pairs, dev_secret):
    """Edge ids (never the secrets) whose secret is the development default or shorter than MIN_SECRET_BYTES."""
    return [edge for edge, secret in pairs.items()
            if secret == dev_secret or len(secret.encode()) < MIN_SECRET_BYTES]
