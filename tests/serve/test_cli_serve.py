"""`blockgen serve` as a command: it binds loopback, asks for the key, serves the checkpoint and stops on Ctrl-C;
and the embedded default behind it answers as it does in process."""

import json
import signal
import subprocess
import sys
import time

import httpx
import pytest
from helpers import save_checkpoint, tiny_hf_model
from openai import OpenAI
from serving import free_port, running


def test_the_serve_command(tmp_path):
    checkpoint = save_checkpoint(tiny_hf_model("llama", max_position_embeddings=4096), tmp_path / "ckpt")
    port = free_port()
    command = [sys.executable, "-m", "blockgen.cli", "serve", "--model", str(checkpoint), "--served-name", "tiny",
               "--port", str(port), "--api-key", "sesame", "--jobs-dir", str(tmp_path / "jobs"), "--log-level",
               "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rest = []
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sesame", max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny"]
        reply = client.completions.create(model="tiny", prompt="The river", max_tokens=5)
        assert reply.usage.completion_tokens == 5
        # Ctrl-C while an answer streams: the stream ends with an error saying why, and the server exits cleanly
        body = {"model": "tiny", "prompt": "The river", "max_tokens": 4000, "stream": True}
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60,
                          headers={"Authorization": "Bearer sesame"}) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    break
            process.send_signal(signal.SIGINT)
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest and json.loads(rest[-1].removeprefix("data: "))["error"]["code"] == "server_stopping"
    finally:
        if process.poll() is None and not rest:  # not interrupted yet (a second Ctrl-C forces the exit)
            process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"on http://127.0.0.1:{port}/v1" in err


@pytest.mark.slow
def test_the_default_model_served(default_lm, tmp_path):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    expected = default_lm.generate(messages, chat=True, max_new_tokens=24)
    with running(default_lm, jobs_dir=tmp_path) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="default", messages=messages, max_tokens=24)
        assert reply.choices[0].message.content == expected
        assert "Paris" in reply.choices[0].message.content
