"""Errors in OpenAI's JSON shape with the right status: 400 naming the field, 401 without the key, 404 for an unknown
model, job or route, 400 `context_length_exceeded` for a prompt over the context; never a traceback."""

import httpx
import openai
import pytest
from openai import OpenAI

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


@pytest.mark.parametrize("change, field", [
    ({"temperature": -1}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 99}, "n"),
    ({"top_p": 1.5}, "top_p"),
    ({"stop": [""]}, "stop"),
    ({"threshold": 3}, "threshold"),
    ({"scheduler": "sideways"}, "scheduler"),
    ({"block_size": 4}, "block_size"),  # an AR checkpoint decodes one token at a time
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0]"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"dry_breakers": [""]}, "dry_breakers.0"),  # an empty breaker would hold in every token: DRY silently off
    ({"dry_breakers": ["x"] * 21}, "dry_breakers"),
    ({"dry_multiplier": -0.5}, "dry_multiplier"),
    ({"dry_penalty_last_n": 64}, "dry_penalty_last_n"),  # another server's field: refused, not ignored
])
def test_bad_values_are_400_naming_the_field(ar_url, change, field):
    error = _error(httpx.post(f"{ar_url}/v1/chat/completions", json=CHAT | change), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == field and field.split(".")[0].split("[")[0] \
        in error["message"]


def test_completion_fields_and_bodies(ar_url):
    body = {"model": "tiny", "prompt": "The river", "max_tokens": 4}
    assert _error(httpx.post(f"{ar_url}/v1/completions", json=body | {"echo": True}), 400)["param"] == "echo"
    assert _error(httpx.post(f"{ar_url}/v1/completions", json=body | {"prompt": ""}), 400)["param"] == "prompt"
    assert _error(httpx.post(f"{ar_url}/v1/completions", json={"prompt": "x"}), 400)["param"] == "model"
    error = _error(httpx.post(f"{ar_url}/v1/completions", content=b"{not json", headers={"content-type":
                                                                                          "application/json"}), 400)
    assert error["code"] == "invalid_json"


def test_a_prompt_over_the_context_is_400_context_length_exceeded(ar_url):
    client = OpenAI(base_url=f"{ar_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "tide " * 5000}])
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as caught:  # a short prompt with too long an answer
        client.completions.create(model="tiny", prompt="The river", max_tokens=5000)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "prompt"


def test_unknown_model_job_and_route_are_404(ar_url):
    client = OpenAI(base_url=f"{ar_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=CHAT["messages"])
    assert caught.value.code == "model_not_found" and "gpt-4o" in str(caught.value)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    assert _error(httpx.get(f"{ar_url}/v1/documents/doc_000000000000000000000000"), 404)["param"] == "id"
    assert _error(httpx.get(f"{ar_url}/v1/documents/..%2F..%2Fetc"), 404)
    assert _error(httpx.get(f"{ar_url}/v1/nothing-here"), 404)["code"] == "not_found"
    assert _error(httpx.delete(f"{ar_url}/v1/models"), 405)


def test_an_api_key_is_required_when_set(ar_lm, serve):
    url = serve(ar_lm, model_name="tiny", api_key="sesame")
    assert _error(httpx.get(f"{url}/v1/models"), 401)["code"] == "invalid_api_key"
    assert _error(httpx.post(f"{url}/v1/chat/completions", json=CHAT,
                             headers={"Authorization": "Bearer wrong"}), 401)
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    client = OpenAI(base_url=f"{url}/v1", api_key="sesame", max_retries=0)
    assert client.chat.completions.create(**CHAT).choices[0].finish_reason == "length"
    assert httpx.get(f"{url}/health").json()["status"] == "ok"  # a liveness probe needs no key
