"""The form that starts a run on a thread."""

from __future__ import annotations

from typing import Any

from django import forms

DEFAULT_MODEL = "echo"
MAX_MODEL_LENGTH = 256
MAX_INSTRUCTIONS_LENGTH = 32_000


class StartRunForm(forms.Form):
    """`model` and `instructions`: the names the thread page's form posts to run-create."""

    model = forms.CharField(
        label="Model",
        initial=DEFAULT_MODEL,
        max_length=MAX_MODEL_LENGTH,
        help_text='The model that answers. "echo" repeats the last user message.',
        error_messages={
            "required": "Name the model that should answer (for example echo).",
            "max_length": f"A model name is at most {MAX_MODEL_LENGTH} characters.",
        },
    )
    instructions = forms.CharField(
        label="Instructions (optional)",
        required=False,
        max_length=MAX_INSTRUCTIONS_LENGTH,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Guidance for the model for this run only.",
        error_messages={
            "max_length": (
                f"Instructions are at most {MAX_INSTRUCTIONS_LENGTH:,} characters "
                "(these have %(show_value)s)."
            ),
        },
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Field IDs of their own, so the form can sit beside other forms on a page.
        kwargs.setdefault("auto_id", "id_run_%s")
        super().__init__(*args, **kwargs)

    def clean_model(self) -> str:
        model: str = self.cleaned_data["model"]
        if any(not char.isprintable() for char in model):
            raise forms.ValidationError("A model name cannot contain control characters.")
        return model

    def clean_instructions(self) -> str | None:
        instructions: str = self.cleaned_data["instructions"]
        return instructions if instructions.strip() else None
