"""The demo storefront's one piece of state: which source it sends through, and that
source's write key (write keys are public by design — every page of a shop carries one —
so keeping it readable here is not a leak; secret keys are never stored)."""

from __future__ import annotations

from django.db import models


class ShopConfig(models.Model):
    source = models.OneToOneField("profiles.Source", on_delete=models.CASCADE)
    write_key = models.CharField(max_length=80)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "demo storefront configuration"

    def __str__(self) -> str:
        return f"storefront → {self.source}"
