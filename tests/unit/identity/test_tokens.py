"""Hub tokens: format, what is stored of them, and redaction."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.identity.tokens import TokenKind, digest, matches, new_token, parse, redact


def test_a_new_token_parses_back_and_only_its_digest_matches() -> None:
    made = new_token(TokenKind.USER)
    assert made.token.startswith(f"efu_{made.id}_")
    parsed = parse(made.token)
    assert parsed is not None and (parsed.kind, parsed.id) == (TokenKind.USER, made.id)
    assert matches(parsed, made.digest)
    assert made.digest == digest(parsed.secret) and parsed.secret not in made.digest
    other = new_token(TokenKind.USER)
    assert not matches(parsed, other.digest)
    assert other.id != made.id and other.token != made.token


def test_join_tokens_are_told_apart() -> None:
    made = new_token(TokenKind.JOIN)
    parsed = parse(made.token)
    assert made.token.startswith("efj_") and parsed is not None and parsed.kind == TokenKind.JOIN


@given(st.text(max_size=120))
def test_anything_else_is_not_a_hub_token(text: str) -> None:
    parsed = parse(text)
    if parsed is not None:
        assert text.startswith(("efu_", "efj_")) and len(text) == 4 + 16 + 1 + 43


def test_redact_hides_secrets_but_keeps_the_id() -> None:
    made = new_token(TokenKind.USER)
    line = f"failed with Authorization: Bearer {made.token} from 10.0.0.1"
    shown = redact(line)
    assert made.token not in shown and parse(made.token) is not None
    assert f"efu_{made.id}_<redacted>" in shown
