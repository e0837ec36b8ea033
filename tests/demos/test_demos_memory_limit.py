"""The chat demo under a 4 GB virtual-memory limit (`ulimit -v 4000000`) answers four concurrent uploads of a
1,000,003 Hz WAV with an error line each and stays up under 2 GB: the rate is refused before any resampling, and
the server caps glibc's malloc arenas (each thread's arena reserves 64 MiB of address space; without the cap the
server died on a 2 KB allocation)."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from mmrwkv.demos.common import free_port
from mmrwkv.limits import bound_malloc_arenas


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_arenas_can_be_capped_on_linux():
    assert bound_malloc_arenas() is True


def test_demo_under_a_memory_limit_refuses_four_audio_bombs_at_once(tiny_checkpoint, tmp_path):
    from gradio_client import Client, handle_file

    wav = tmp_path / "bomb.wav"
    sf.write(wav, (0.3 * np.random.default_rng(0).standard_normal(4800)).astype("float32"), 1000003)
    port = free_port()
    command = (
        f"ulimit -v 4000000; exec {sys.executable} -m mmrwkv.cli demo --checkpoint {tiny_checkpoint} --port {port}"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen(["bash", "-c", command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                assert time.monotonic() < deadline, "the demo did not come up"
                time.sleep(1)
        replies = {}

        def upload(i):
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            message = {"text": "hear this", "files": [handle_file(str(wav))]}
            try:
                out = client.predict(message, tiny_checkpoint, "", 0.0, 1.0, 8, api_name="/chat")
                replies[i] = out[-1]["content"] if out else out
            except Exception as err:  # shown by the assertion below
                replies[i] = f"client error: {err!r}"

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert server.poll() is None, server.stderr.read().decode()[-2000:]
        assert sorted(replies) == [0, 1, 2, 3]
        for reply in replies.values():
            assert "sample rate 1000003 Hz" in str(reply), reply
            assert str(tmp_path) not in str(reply), reply
        status = dict(line.split(":", 1) for line in open(f"/proc/{server.pid}/status").read().splitlines())
        assert int(status["VmHWM"].split()[0]) < 2 * 2**20  # kB
    finally:
        server.terminate()
        server.wait(30)
