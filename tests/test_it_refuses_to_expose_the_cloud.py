"""Finding 8: a cloud reachable beyond loopback needs strong edge secrets and TLS, and `check` says so.

Every case here is refused before a socket is opened, so nothing listens
beyond loopback during the test.
"""

import pytest

from tests.conftest import free_port, run_manage

STRONG = "k3T9vQ2xLm8pR4sZ7wY1bN6cF0hJ5dG2"  # 32 bytes


def _runcloud(*args, **env):
    return run_manage("runcloud", "--until", "1", "--heartbeat-port", str(free_port()), "--data-port",
                      str(free_port()), *args, env={"FOG_CLOUD_KEY_PREFIX": "test:expose:", **env}, timeout=60)


@pytest.mark.parametrize("secrets, weak", [
    (None, ["edge-1 (the development default)"]),
    ("edge-1:dev-edge-secret-change-me", ["edge-1 (the development default)"]),
    (f"edge-1:{STRONG},edge-2:short-secret-20bytes", ["edge-2 (shorter than 32 bytes)"]),
    (f"edge-1:{STRONG},edge-2:{'ab' * 20},edge-3:{'abcdefgh' * 4}",
     ["edge-2 (fewer than 8 different characters)", "edge-3 (a shorter part repeated)"]),
    # Guessable with a few changes: the development default with more to it, a sequence, a word repeated.
    (f"edge-1:{STRONG},edge-2:dev-edge-secret-change-me-please-7,edge-3:{'1234567890' * 3}12,"
     f"edge-4:{'password' * 4}1", ["edge-2 (the development default with more to it)",
                                  "edge-3 (a shorter part repeated)", "edge-4 (a shorter part repeated)"]),
    # Frames tagged with a secret two edges hold open as either's: each could deliver as the other.
    (f"edge-1:{STRONG},edge-2:{STRONG},edge-3:{STRONG[::-1]}",
     ["edge-1 (shared with another edge)", "edge-2 (shared with another edge)"]),
], ids=["unset", "development", "short", "pattern", "guessable", "shared"])
def test_it_refuses_a_public_bind_with_a_weak_secret(secrets, weak):
    result = _runcloud("--bind", "0.0.0.0", "--insecure-plaintext", **({"FOG_EDGE_SECRETS": secrets} if secrets else {}))
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0" in result.stderr and f"weak edge secrets: {', '.join(weak)};" in result.stderr
    for secret in (secrets or "").replace(",", ":").split(":")[1::2]:
        assert secret not in result.stderr  # ids named, secrets never


def test_it_refuses_a_public_bind_without_tls_unless_told():
    result = _runcloud("--bind", "0.0.0.0", FOG_EDGE_SECRETS=f"edge-1:{STRONG}")
    assert result.returncode == 1
    assert "without TLS" in result.stderr and "--insecure-plaintext" in result.stderr


def test_check_reports_a_weak_secret_on_a_public_bind_without_deploy():
    result = run_manage("check", env={"FOG_CLOUD_BIND": "0.0.0.0"})
    assert result.returncode == 1 and "fog.E010" in result.stderr and "fog.W010" in result.stderr
    quiet = run_manage("check", env={"FOG_CLOUD_BIND": "127.0.0.1"})
    assert quiet.returncode == 0 and "fog.E010" not in quiet.stderr + quiet.stdout


def test_check_names_a_missing_tls_file(tmp_path):
    result = run_manage("check", env={"FOG_CLOUD_TLS_CERT": str(tmp_path / "absent.pem"), "FOG_TLS_MUTUAL": "1"})
    assert result.returncode == 1
    assert "fog.E011" in result.stderr and "absent.pem" in result.stderr and "fog.E012" in result.stderr


def test_check_warns_of_an_edge_dialling_in_clear_text_and_of_a_secrets_file_others_can_read(tmp_path):
    secrets = tmp_path / "edge-secrets"
    secrets.write_text(f"edge-1:{STRONG}\n")
    secrets.chmod(0o644)
    result = run_manage("check", env={"FOG_CLOUD_HOST": "cloud.example", "FOG_TLS_CA": "",
                                      "FOG_EDGE_SECRETS_FILE": str(secrets)})
    assert "fog.W011" in result.stderr and "cloud.example" in result.stderr, result.stderr
    assert "fog.W012" in result.stderr and "(mode 0644)" in result.stderr and "chmod 600" in result.stderr
    secrets.chmod(0o600)
    quiet = run_manage("check", env={"FOG_EDGE_SECRETS_FILE": str(secrets)})
    assert quiet.returncode == 0 and "fog.W01" not in quiet.stderr, quiet.stderr


@pytest.mark.parametrize("hosts", ["cloud.example", "127.0.0.1,10.1.2.3"])
def test_an_edge_refuses_to_send_readings_in_clear_text_to_a_cloud_beyond_loopback(hosts):
    result = run_manage("runedge", "--burst", "--timeout", "5", env={"FOG_CLOUD_HOST": hosts, "FOG_TLS_CA": ""},
                        timeout=60)
    assert result.returncode == 1
    named = hosts.split(",")[-1]
    assert f"the cloud ({named}) is beyond loopback and FOG_TLS_CA is not set" in result.stderr
    assert "--insecure-plaintext" in result.stderr
