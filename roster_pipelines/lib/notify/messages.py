"""Message templates: one fixed text per notification type, rendered with Jinja2.

HTML is rendered with autoescaping on, so names and values from the SIS (a class
called ``<script>``) arrive as text. Plain text and SMS bodies are not HTML and are
rendered without escaping. The first notification people get (``welcome``, R12) is
fixed: it takes no text from an administrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import DictLoader, Environment, PackageLoader, StrictUndefined, select_autoescape

APP_NAME = "the school messaging app"
SMS_MAX = 320  # two SMS segments; longer lists are cut with "…"

_TEXT = {
    "welcome.subject": "{{ district_name }} has set up your account",
    "welcome.text": (
        "Hello {{ first_name or 'there' }},\n\n"
        "{{ district_name }} has set up your account in {{ app }} as a {{ role }}. "
        "Sign in with {{ destination }} to see your school{{ 's' if schools|length > 1 }}"
        "{% if schools %}: {{ schools|join(', ') }}{% endif %}.\n"
    ),
    "welcome.sms": (
        "{{ district_name }} set up your {{ app }} account ({{ role }}). "
        "Sign in with this number to see your classes."
    ),
    "classes_added.subject": (
        "{{ classes|length }} new class{{ 'es' if classes|length > 1 }} to claim"
    ),
    "classes_added.text": (
        "Hello {{ first_name or 'there' }},\n\n"
        "The latest roster sync of {{ district_name }} added you to "
        "{{ 'these classes' if classes|length > 1 else 'this class' }}:\n"
        "{% for c in classes %}- {{ c.name }} ({{ c.school }})\n{% endfor %}\n"
        "Claim a class in {{ app }} to start messaging its students and parents; "
        "they hear about it when you claim it.\n"
    ),
    "classes_added.sms": (
        "New class{{ 'es' if classes|length > 1 }} to claim: "
        "{% for c in classes %}{{ c.name }}{{ ', ' if not loop.last }}{% endfor %}. "
        "Open {{ app }} to claim."
    ),
    "class_ready.subject": "{{ class_name }} is ready in {{ app }}",
    "class_ready.text": (
        "Hello {{ first_name or 'there' }},\n\n"
        "{% if role == 'parent' %}Your child's class {% else %}Your class {% endif %}"
        "{{ class_name }} at {{ school }}{% if teacher %} with {{ teacher }}{% endif %} "
        "is now active in {{ app }}. Messages from the class will reach you here.\n"
    ),
    "class_ready.sms": (
        "{% if role == 'parent' %}Your child's class{% else %}Your class{% endif %} "
        "{{ class_name }}{% if teacher %} with {{ teacher }}{% endif %} is now active in {{ app }}."
    ),
    # Payload written by lib/freshness.py (the R9 daily check).
    "freshness_warning.subject": (
        "{{ district_name|default(district) }}: no roster update for "
        "{{ days_since_last_drop }} days"
    ),
    "freshness_warning.text": (
        "Hello {{ admin_name|default('there', true) }},\n\n"
        "The last roster drop of {{ district_name|default(district) }} was applied on "
        "{{ last_drop_date }}, {{ days_since_last_drop }} days ago. After {{ limit_days }} "
        "days without a drop (from {{ removals_held_from[:10] }}), removals of people and "
        "classes are no longer automatic: the next drop's removals wait for your "
        "confirmation. Send a new SIS export to keep the sync current.\n"
    ),
    "sync_report.subject": ("Roster sync {{ status_label }}: {{ district_name }}, drop {{ drop }}"),
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    sms: str


def _text_env() -> Environment:
    env = Environment(
        loader=DictLoader(_TEXT),
        autoescape=False,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    return env


def _html_env() -> Environment:
    return Environment(
        loader=PackageLoader("roster_pipelines.lib", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )


_TEXT_ENV = _text_env()
_HTML_ENV = _html_env()

TEMPLATES = ("welcome", "classes_added", "class_ready", "freshness_warning", "sync_report")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render(template: str, payload: dict[str, Any]) -> Rendered:
    """Subject, plain text, HTML and SMS body of one outbox row."""
    if template not in TEMPLATES:
        raise KeyError(f"unknown notification template {template!r}")
    context = {"app": APP_NAME, **payload}
    subject = _one_line(_TEXT_ENV.get_template(f"{template}.subject").render(context))
    if template == "sync_report":
        text = _TEXT_ENV.from_string(_SYNC_REPORT_TEXT).render(context)
    else:
        text = _TEXT_ENV.get_template(f"{template}.text").render(context)
    html_template = "sync_report" if template == "sync_report" else "message"
    html = _HTML_ENV.get_template(f"email/{html_template}.html.j2").render(
        context, subject=subject, text=text
    )
    sms = ""
    if f"{template}.sms" in _TEXT:
        sms = _one_line(_TEXT_ENV.get_template(f"{template}.sms").render(context))
        if len(sms) > SMS_MAX:
            sms = sms[: SMS_MAX - 1] + "…"
    return Rendered(subject=subject, text=text, html=html, sms=sms)


_SYNC_REPORT_TEXT = """Roster sync of {{ district_name }}: drop {{ drop }} {{ status_label }}.
{% if hold_reasons %}
On hold until an administrator confirms or discards the removals:
{% for r in hold_reasons %}- {{ r }}
{% endfor %}{% endif %}
Changes: {% for k, v in changes.items() if v %}{{ k|replace('_', ' ') }} {{ v }}{{ ', ' if not loop.last }}{% else %}none{% endfor %}
Issues: {{ issue_totals.get('file_error', 0) }} file errors, {{ issue_totals.get('error', 0) }} errors, {{ issue_totals.get('alert', 0) }} alerts

School | teachers | students | parents | classes claimed | unclaimed | errors | alerts | status
{% for s in schools %}{{ s.name }} | {{ s.teachers }} | {{ s.students }} | {{ s.parents }} | {{ s.classes_claimed }} | {{ s.classes_unclaimed }} | {{ s.errors }} | {{ s.alerts }} | {{ s.status }}
{% endfor %}
{% if report_location %}The full report and one CSV per issue code: {{ report_location }}
{% endif %}"""
