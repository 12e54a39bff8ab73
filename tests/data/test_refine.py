from tests.peers.loopback import openai_server
from unisono.data.refine import ChatRefiner, ChatRefinerConfig, RuleRefiner, build_refiner, terminology


def test_rules_inverse_normalise_and_punctuate():
    r = RuleRefiner()
    out = r.refine(["i paid twenty five dollars in nineteen ninety nine", "where did you go", "ten percent"], "en")
    assert out == ["I paid $25 in 1999.", "Where did you go?", "10%."]


def test_terminology_is_carried_across_segments():
    raw = [["We met the Kubernetes team.", "we met the kubernetes team"], ["it runs on Kubernetes today", "it runs on kubernetes"],
           ["Kubernetes is big"]]  # sentence-initial capital: not counted
    terms = terminology(raw)
    assert terms["kubernetes"] == "Kubernetes"
    assert "is" not in terms and "we" not in terms
    out = RuleRefiner().refine(["we met the kubernetes team", "it runs on kubernetes", "kubernetes is big"], "en", raw)
    assert all("Kubernetes" in s for s in out)
    assert out[0] == "We met the Kubernetes team."


def test_chinese_gets_a_full_stop_only():
    assert RuleRefiner().refine(["今天天气好", "好。", ""], "zh") == ["今天天气好。", "好。", ""]


def test_chat_refiner_sends_context_and_uses_the_answer():
    def shout(body: dict) -> str:
        return body["messages"][1]["content"].rsplit("\n", 1)[-1].upper() + "!"

    with openai_server(chat=shout) as server:
        r = ChatRefiner(ChatRefinerConfig(url=server.url, model="m"))
        out = r.refine(["hello there", "general kenobi"], "en")
    assert out == ["HELLO THERE!", "GENERAL KENOBI!"] and not r.failures
    seen = [request["body"] for request in server.requests]
    assert seen[0]["model"] == "m" and seen[0]["messages"][0]["role"] == "system"
    assert "HELLO THERE!" in seen[1]["messages"][1]["content"]  # the previous segment is context


def test_chat_refiner_falls_back_to_rules_on_errors():
    with openai_server(fail=(503, "overloaded")) as server:
        r = ChatRefiner(ChatRefinerConfig(url=server.url + "/chat/completions", timeout_s=5))
        assert r.refine(["i have two cats"], "en") == ["I have 2 cats."]
    assert len(r.failures) == 1 and "503" in r.failures[0]


def test_build_refiner():
    assert isinstance(build_refiner("rules"), RuleRefiner)
    r = build_refiner("openai:http://localhost:8000/v1:model=qwen")
    assert isinstance(r, ChatRefiner) and r.config.model == "qwen" and r.client.base_url == "http://localhost:8000/v1"
