"""Conversation building: the exact messages a model is trained on, table by table."""

from __future__ import annotations

import pytest

from kinetics_prep.conversation import (
    DEFAULT_ANSWER_TEMPLATE,
    DEFAULT_PROMPT,
    ConversationError,
    answer_for,
    build_messages,
    choose_prompt,
    media_paths,
    parse_prompts,
    text_of,
    to_llava,
    to_trl_messages,
)

FRAMES = [f"frames/c1/frame_{k}.jpg" for k in range(1, 5)]


def test_default_prompt_and_answer_are_the_recipes():
    assert DEFAULT_PROMPT == (
        "Please analyze the sequence of frames from this video. "
        "What specific action or event is happening?"
    )
    assert DEFAULT_ANSWER_TEMPLATE == "The video shows {label}."


def test_build_messages_is_the_seed_format_exactly():
    assert build_messages(
        prompt=DEFAULT_PROMPT, answer="The video shows abseiling.", images=FRAMES
    ) == [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": "frames/c1/frame_1.jpg"},
                {"type": "image", "image": "frames/c1/frame_2.jpg"},
                {"type": "image", "image": "frames/c1/frame_3.jpg"},
                {"type": "image", "image": "frames/c1/frame_4.jpg"},
                {"type": "text", "text": DEFAULT_PROMPT},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "The video shows abseiling."}]},
    ]


def test_build_messages_video_variant():
    messages = build_messages(prompt="Q?", answer="A.", video="clips/c1.mp4")
    assert messages[0]["content"] == [
        {"type": "video", "video": "clips/c1.mp4"},
        {"type": "text", "text": "Q?"},
    ]
    assert media_paths(messages, "video") == ["clips/c1.mp4"]
    assert media_paths(messages, "image") == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"images": FRAMES, "video": "clips/c.mp4"}, "not both"),
        ({}, "not both/neither"),
        ({"images": FRAMES, "answer": "  "}, "answer is empty"),
    ],
)
def test_build_messages_rejects(kwargs, message):
    kwargs = {"prompt": "Q?", "answer": "A.", **kwargs}
    with pytest.raises(ConversationError, match=message):
        build_messages(**kwargs)


@pytest.mark.parametrize(
    "label, template, expected",
    [
        ("abseiling", DEFAULT_ANSWER_TEMPLATE, "The video shows abseiling."),
        (
            "massaging person's head",
            DEFAULT_ANSWER_TEMPLATE,
            "The video shows massaging person's head.",
        ),
        ("hurling (sport)", "{label}", "hurling (sport)"),
        ("tai chi", "Action: {label} {{certain}}", "Action: tai chi {certain}"),
    ],
)
def test_answer_for(label, template, expected):
    assert answer_for(label=label, template=template) == expected


@pytest.mark.parametrize(
    "template, fragment",
    [
        ("The video shows it.", "found none"),
        ("{label} and {label}", "exactly once"),
        ("{action}", "['action']"),
        ("{label", "not a valid format string"),
        ("{0}", "['0']"),
    ],
)
def test_bad_answer_templates_name_the_flag(template, fragment):
    with pytest.raises(ConversationError) as info:
        answer_for(label="x", template=template)
    assert "--answer-template" in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("What?\n\n# comment\nWhich action?\n", ["What?", "Which action?"]),
        ('["A?", " B? "]', ["A?", "B?"]),
        ("  only one  ", ["only one"]),
    ],
)
def test_parse_prompts(text, expected):
    assert parse_prompts(text) == expected


@pytest.mark.parametrize("text", ["", "# just a comment\n", "[]", '["ok", 3]', "[not json"])
def test_parse_prompts_rejects(text):
    with pytest.raises(ConversationError, match="--prompt-file"):
        parse_prompts(text)


def test_choose_prompt_is_per_sample_seeded_and_order_free():
    prompts = ["p0", "p1", "p2", "p3"]
    ids = [f"clip{i}" for i in range(40)]
    picks = {i: choose_prompt(prompts=prompts, seed=0, sample_id=i) for i in ids}
    assert set(picks.values()) == set(prompts)  # all prompts get used
    assert {i: choose_prompt(prompts=prompts, seed=0, sample_id=i) for i in reversed(ids)} == picks
    other_seed = {i: choose_prompt(prompts=prompts, seed=1, sample_id=i) for i in ids}
    assert other_seed != picks
    assert choose_prompt(prompts=["only"], seed=5, sample_id="x") == "only"
    with pytest.raises(ConversationError):
        choose_prompt(prompts=[], seed=0, sample_id="x")


def test_trl_layout_keeps_order_with_placeholders():
    messages = build_messages(prompt="Q?", answer="A.", images=FRAMES[:2])
    assert to_trl_messages(messages) == [
        {
            "role": "user",
            "content": [
                {"type": "image", "text": None},
                {"type": "image", "text": None},
                {"type": "text", "text": "Q?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A."}]},
    ]
    assert text_of(messages[-1]) == "A."


@pytest.mark.parametrize(
    "media, expected_key, expected_value, tokens",
    [
        ({"images": FRAMES}, "image", FRAMES, "<image>\n<image>\n<image>\n<image>"),
        ({"video": "clips/c1.mp4"}, "video", "clips/c1.mp4", "<video>"),
    ],
)
def test_llava_entry(media, expected_key, expected_value, tokens):
    messages = build_messages(prompt="Q?", answer="The video shows x.", **media)
    assert to_llava(sample_id="c1", messages=messages) == {
        "id": "c1",
        expected_key: expected_value,
        "conversations": [
            {"from": "human", "value": f"{tokens}\nQ?"},
            {"from": "gpt", "value": "The video shows x."},
        ],
    }
