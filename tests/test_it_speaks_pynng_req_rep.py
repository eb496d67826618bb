import threading

import pynng


def test_it_answers_a_request_over_loopback(free_port):
    address = f"tcp://127.0.0.1:{free_port}"
    with pynng.Rep0(listen=address, recv_timeout=5000) as rep, pynng.Req0(dial=address, recv_timeout=5000) as req:
        def serve():
            rep.send(rep.recv().upper())

        server = threading.Thread(target=serve)
        server.start()
        req.send(b"heartbeat")
        assert req.recv() == b"HEARTBEAT"
        server.join(timeout=5)
