"""Checks of a reply against a conversation's reference answer: one checker for RL rewards and for
evaluation alike."""

from __future__ import annotations


def is_correct(reply: str, answer: str) -> bool:
    return answer.lower() in reply.lower()
