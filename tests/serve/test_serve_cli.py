"""`mmrwkv serve` on the command line: its options reach the server (the HTTP side is tested with the openai
client in test_serve_openai_client.py)."""

from mmrwkv.cli import main


def test_serve_command_wires_its_options(monkeypatch):
    import mmrwkv.serve_app

    seen = {}
    monkeypatch.setattr(
        mmrwkv.serve_app, "run_server", lambda server, host, port: seen.update(server=server, host=host, port=port)
    )
    argv = ["serve", "--random-tiny", "--port", "8123", "--max-body-mb", "1", "--max-in-flight", "2", "--name", "m"]
    assert main(argv) == 0
    server = seen["server"]
    assert (seen["host"], seen["port"], server.name) == ("127.0.0.1", 8123, "m")
    assert server.limits.max_body_bytes == 2**20 and server.limits.max_in_flight == 2
