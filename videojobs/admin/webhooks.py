"""Webhook deliveries in the admin: every attempt and its outcome, and "Deliver again"."""
from __future__ import annotations

import json

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from videojobs import services
from videojobs.admin.live import (
    ReadOnlyAdmin,
    excerpt,
    seconds_text,
)
from videojobs.models import (
    WebhookDelivery,
)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("job_link", "event", "url", "state", "attempts", "last_status_code", "last_error_excerpt",
                    "created_at", "delivered_at")
    list_filter = ("state", "event")
    search_fields = ("job__request_id", "url", "=public_id")  # the X-Webhook-Id a receiver reports
    list_select_related = ("job",)
    actions = ("deliver_again",)
    fields = readonly_fields = ("job_link", "public_id", "event", "url", "state", "attempts", "next_attempt_at", "last_attempt_at",
                                "last_status_code", "last_error", "created_at", "delivered_at", "attempt_log",
                                "payload_json")

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    @admin.display(description="job", ordering="job__request_id")
    def job_link(self, delivery: WebhookDelivery) -> str:
        url = reverse("admin:videojobs_videojob_change", args=[delivery.job_id])
        return format_html('<a href="{}">{}</a>', url, delivery.job.request_id)

    @admin.display(description="last error")
    def last_error_excerpt(self, delivery: WebhookDelivery) -> str:
        return excerpt(delivery.last_error, 80)

    @admin.display(description="attempts log")
    def attempt_log(self, delivery: WebhookDelivery) -> str:
        if not delivery.log:
            return "-"
        rows = ((entry.get("at", ""), entry.get("status_code") or "-", entry.get("error") or "",
                 seconds_text(entry.get("seconds", ""))) for entry in delivery.log)
        return format_html(
            '<table class="attempts"><thead><tr><th>at</th><th>HTTP status</th><th>error</th><th>seconds</th></tr>'
            "</thead><tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="payload")
    def payload_json(self, delivery: WebhookDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(delivery.payload, indent=2, sort_keys=True))

    @admin.action(description="Deliver again")
    def deliver_again(self, request, queryset):
        again = sum(1 for delivery in queryset if services.redeliver_webhook(delivery_id=delivery.pk))
        skipped = queryset.count() - again
        self.message_user(request, f"{again} delivery(ies) will be sent again now; {skipped} had already been "
                                   "delivered.", messages.SUCCESS)
