import math

import pytest
import torch

from models.calculator import CalculatorError, calculate
from models.chat import ChatTokens, render_conversation, render_prompt
from models.engine import generate, generate_many, generate_naive
from models.gpt import GPT, GPTConfig
from models.reward import RewardModel, bradley_terry_loss
from tasks.tokenizer.tokenize import load_tokenizer


def tiny_gpt(vocab=300, **kw) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, sequence_len=32, n_layer=2, n_embd=64, n_head=4, n_kv_head=kw.pop("kv", 4)))
    for p in model.parameters():  # the zero-initialised projections would make every output alike
        torch.nn.init.normal_(p, std=0.1)
    return model


def test_depth_sets_width_and_heads():
    c = GPTConfig.from_depth(12, vocab_size=1000, sequence_len=256)
    assert (c.n_layer, c.n_embd, c.n_head) == (12, 768, 6)
    assert GPTConfig.from_depth(4, 1000, 64, aspect_ratio=32, head_dim=32).n_head == 4


@pytest.mark.parametrize("kv", [4, 2])
def test_forward_shapes_and_loss(kv):
    model = tiny_gpt(kv=kv)
    x = torch.randint(0, 300, (2, 16))
    assert model(x).shape == (2, 16, 300)
    loss = model(x, x)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()


def test_logits_are_soft_capped():
    model = tiny_gpt()
    assert model(torch.randint(0, 300, (1, 8))).abs().max() <= model.config.logit_softcap


@pytest.mark.parametrize("kv", [4, 2])
def test_kv_cache_engine_matches_naive_generation(kv):
    model = tiny_gpt(kv=kv)
    prompt = [5, 17, 42, 7]
    naive = generate_naive(model, prompt, max_tokens=12)
    cached = generate(model, prompt, num_samples=2, max_tokens=12, temperature=0.0)
    assert cached[0].tokens == naive and cached[1].tokens == naive


def test_sampling_is_seeded_and_batched_rows_differ():
    model = tiny_gpt()
    a = generate(model, [1, 2, 3], num_samples=4, max_tokens=10, temperature=1.0, seed=3)
    b = generate(model, [1, 2, 3], num_samples=4, max_tokens=10, temperature=1.0, seed=3)
    assert [s.tokens for s in a] == [s.tokens for s in b]
    assert len({tuple(s.tokens) for s in a}) > 1


def test_many_prompts_decoded_together_reply_as_one_at_a_time():
    """Prompts of one length share a batch; greedy replies are those of each prompt on its own."""
    model = tiny_gpt()
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8], [9, 10, 11], [12, 13]]
    together = generate_many(model, prompts, max_tokens=8, temperature=0.0, max_rows=2)
    assert [s[0].tokens for s in together] == [generate(model, p, max_tokens=8, temperature=0.0)[0].tokens
                                                for p in prompts]
    drawn = generate_many(model, prompts, num_samples=3, max_tokens=6, temperature=1.0, seed=5)
    assert [len(s) for s in drawn] == [3] * 5 and all(len(x.tokens) == 6 for s in drawn for x in s)
    again = generate_many(model, prompts, num_samples=3, max_tokens=6, temperature=1.0, seed=5)
    assert [[x.tokens for x in s] for s in drawn] == [[x.tokens for x in s] for s in again]


def test_calculator_evaluates_arithmetic_only():
    assert calculate("12*34") == "408"
    assert calculate("(1+2)/4") == "0.75"
    assert calculate("-3 ** 2") == "-9"
    for bad in ["__import__('os')", "open('x')", "2**1000", "1/0", "a+1", "[1,2]"]:
        with pytest.raises(CalculatorError):
            calculate(bad)


def test_chat_mask_trains_only_assistant_tokens(tokenizer_path):
    chat = ChatTokens(load_tokenizer(tokenizer_path))
    messages = [{"role": "user", "content": "What is 2 times 3?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Let me see."},
                                                  {"type": "python", "text": "2*3"},
                                                  {"type": "output", "text": "6"},
                                                  {"type": "text", "text": "It is 6."}]}]
    ids, mask = render_conversation(chat, messages)
    assert len(ids) == len(mask) and ids[0] == chat.bos and ids[-1] == chat.assistant_end and mask[-1] == 1
    trained = [t for t, m in zip(ids, mask) if m]
    assert chat.python_start in trained and chat.python_end in trained
    assert chat.output_start not in trained and chat.user_start not in trained
    assert chat.enc.decode([t for t, m in zip(ids, mask) if not m and t < chat.bos]).count("What is 2 times 3?") == 1
    assert render_prompt(chat, messages[:1])[-1] == chat.assistant_start


def test_engine_runs_the_calculator_and_marks_forced_tokens(tokenizer_path):
    enc = load_tokenizer(tokenizer_path)
    chat = ChatTokens(enc)
    model = tiny_gpt(vocab=enc.n_vocab)
    script = [chat.python_start] + enc.encode_ordinary("6*7") + [chat.python_end]

    # Force the model to write a calculator call, then to end: the engine must insert the output.
    class Scripted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.config, self.step = model, model.config, 0

        def forward(self, idx, kv_cache=None):
            logits = self.inner(idx, kv_cache=kv_cache)
            want = script[self.step] if self.step < len(script) else chat.assistant_end
            self.step += 1
            logits[:, -1, :] = -1e9
            logits[:, -1, want] = 0
            return logits

    sample = generate(Scripted(), [chat.bos], max_tokens=20, temperature=0.0, chat=chat)[0]
    text = enc.decode([t for t in sample.tokens if t < chat.bos])
    assert "42" in text
    forced = [t for t, s in zip(sample.tokens, sample.sampled) if not s]
    assert forced[0] == chat.output_start and forced[-1] == chat.output_end


def test_reward_model_scores_and_bradley_terry_loss():
    model = RewardModel(GPTConfig(vocab_size=50, sequence_len=16, n_layer=1, n_embd=32, n_head=2, n_kv_head=2))
    x = torch.randint(0, 50, (3, 10))
    scores = model(x, torch.tensor([10, 5, 3]))
    assert scores.shape == (3,)
    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])) < bradley_terry_loss(torch.tensor([0.0]),
                                                                                                torch.tensor([2.0]))


def test_the_bradley_terry_margin_moves_the_point_of_indifference():
    # -log σ(x) at x = 0 is log 2: a lead equal to the margin costs what a tie costs without one.
    chosen, rejected = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0])
    assert bradley_terry_loss(chosen, rejected, margin=2.0).item() == pytest.approx(
        (math.log(2) + math.log(1 + math.exp(2.0))) / 2)  # leads 2 and 0, less the margin: x = 0 and x = -2


@pytest.mark.parametrize("cap", [15.0, 50.0])
def test_fused_softcapped_loss_matches_autograd(monkeypatch, cap):
    import models.fused as fused

    monkeypatch.setattr(fused, "_BLOCK_BYTES", 5 * 4 * 50)  # blocks of 5 rows: 12 rows cross three blocks
    torch.manual_seed(0)
    h = torch.randn(12, 8, requires_grad=True)
    w = (torch.randn(50, 8) * 5).requires_grad_()
    targets = torch.randint(0, 50, (12,))
    targets[3] = -1  # ignored
    loss = fused.softcapped_linear_cross_entropy(h, w, targets, cap) * 3.0  # an upstream scale
    grads = torch.autograd.grad(loss, (h, w))
    plain = 3.0 * torch.nn.functional.cross_entropy(cap * torch.tanh(h @ w.T / cap), targets, ignore_index=-1)
    plain_grads = torch.autograd.grad(plain, (h, w))
    assert torch.allclose(loss, plain, atol=1e-5)
    for a, b in zip(grads, plain_grads):
        assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():  # loss only: the same value
        assert torch.allclose(fused.softcapped_linear_cross_entropy(h, w, targets, cap) * 3.0, plain)
    h_grad = torch.autograd.grad(fused.softcapped_linear_cross_entropy(h, w, targets, cap), h)[0]
    assert (h_grad[3] == 0).all()  # the ignored row gets no gradient


def test_fused_element_wise_functions_match_autograd():
    import torch.nn.functional as F

    from models.fused import apply_rotary, relu_squared, rms_norm
    from models.gpt import rotary_tables

    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64, requires_grad=True)
    cos, sin = (t[:, :5].double() for t in rotary_tables(5, 8, 10000.0))

    def plain_rotary(x):
        x1, x2 = x[..., :4], x[..., 4:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    cases = [(rms_norm, lambda x: F.rms_norm(x, (x.size(-1),))), (relu_squared, lambda x: torch.relu(x).square()),
             (lambda x: apply_rotary(x, cos, sin), plain_rotary)]
    upstream = torch.randn_like(x)
    for fused, plain in cases:
        assert torch.allclose(fused(x), plain(x))
        assert torch.allclose(torch.autograd.grad(fused(x), x, upstream)[0],
                              torch.autograd.grad(plain(x), x, upstream)[0])
        assert torch.autograd.gradcheck(fused, (x,))


def test_muon_moves_a_matrix_by_an_orthogonalized_step_scaled_by_its_shape():
    from models.optim import make_muon

    torch.manual_seed(0)
    for shape in [(64, 32), (32, 64), (48, 48)]:
        w = torch.nn.Parameter(torch.randn(*shape))
        before = w.detach().clone()
        w.grad = torch.randn(*shape)
        make_muon([w], lr=0.1).step()
        # No weight decay; a tall matrix's step is sqrt(rows / cols) larger, as a square one's.
        scale = 0.1 * max(1.0, shape[0] / shape[1]) ** 0.5
        s = torch.linalg.svdvals((before - w.detach()) / scale)
        assert 0.5 < s.min() and s.max() < 1.5  # the quintic iteration lands singular values near 1


def test_muon_resumes_a_checkpoint_of_summed_momentum():
    """Checkpoints from before torch's Muon: no ns_coefficients etc. in the groups, momentum kept as
    a sum (1 / (1 - momentum) times torch's average). They load and step like torch's own."""
    from models.optim import make_muon

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(16, 8))
    muon = make_muon([w], lr=0.02)
    for _ in range(3):
        w.grad = torch.randn(16, 8)
        muon.step()
    saved = muon.state_dict()
    old_style = {"state": {0: {"momentum_buffer": saved["state"][0]["momentum_buffer"] / (1 - 0.95)}},
                 "param_groups": [{"lr": 0.02, "momentum": 0.95, "nesterov": True, "ns_steps": 5, "params": [0]}]}
    again = make_muon([torch.nn.Parameter(w.detach().clone())], lr=0.02)
    again.load_state_dict(old_style)
    assert torch.allclose(again.state_dict()["state"][0]["momentum_buffer"], saved["state"][0]["momentum_buffer"])
    assert again.param_groups[0]["weight_decay"] == 0.0 and again.param_groups[0]["adjust_lr_fn"] == "original"
    grad = torch.randn(16, 8)
    for opt in (muon, again):
        opt.param_groups[0]["params"][0].grad = grad.clone()
        opt.step()
    assert torch.allclose(again.param_groups[0]["params"][0], w, atol=1e-6)


def test_muon_set_steps_and_round_trips_its_state():
    from models.optim import apply_schedule, make_optimizer

    model = tiny_gpt()
    opt = make_optimizer(model, "muon", lr=1e-3, muon_lr=0.02)
    x = torch.randint(0, 300, (2, 16))
    losses = []
    for _ in range(5):
        loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    apply_schedule(opt, 0.5)
    assert {g["lr"] for g in opt.param_groups} == {5e-4, 0.01}
    again = make_optimizer(model, "muon", lr=1e-3)
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["1"]["state"].keys() == opt.state_dict()["1"]["state"].keys()
