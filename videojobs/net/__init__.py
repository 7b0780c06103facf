"""Outbound HTTP on behalf of a user: the image fetch and the webhook POST.

Pure Python apart from the settings read by :func:`videojobs.net.webhooks.policy_from_settings`:

* :mod:`videojobs.net.addresses` -- the SSRF rules: which addresses may be reached, how a URL
  names its target, and a DNS lookup whose every answer is checked against the rules.
* :mod:`videojobs.net.safe_http` -- one SSRF-checked GET (redirects followed by hand, every hop
  checked) and one POST (no redirects), under a byte cap and an overall deadline.
* :mod:`videojobs.net.deadline` -- the overall deadline of one request, and its socket watchdog.
* :mod:`videojobs.net.images` -- decoding and checking an image, re-encoded as an RGB PNG.
* :mod:`videojobs.net.webhooks` -- the webhook transport: signature, URL check, one delivery.

Every failure a user can cause is an :class:`videojobs.errors.ImageInputError` (the webhook
transport turns it into a :class:`videojobs.errors.WebhookURLError` or an outcome).
"""
