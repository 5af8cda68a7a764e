# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where each site's backups go: the object store layout of an inventory, decided in one place.

Two layouts (docs/install.md, "Object storage"):

- ``shared`` (the default): one object store outside both data centers, one bucket (each site may reach it at an
  address of its own); the store's access keys are the Secret ``<secret_name>`` and its CA the Secret
  ``<ca_secret_name>``.
- ``per_site``: one object store per data center. Each site's host variables set its own ``object_storage_*``
  (endpoint, bucket, region, keys, CA); each site's CNPG Cluster archives to its own store, a replica reads its
  source's store, and the Redis backups are written to every store. The Secrets are named per store:
  ``<secret_name>-<site>`` and ``<ca_secret_name>-<site>``, and every site holds those of all stores.

Plain Python: the filter ``hanzo.kms.object_stores`` and the unit tests import it.
"""

from __future__ import annotations

LAYOUTS = ("shared", "per_site")
# store coordinates: the inventory variable object_storage_<field> of a site, and its default
FIELDS = {"endpoint_url": "", "bucket": "", "region": "us-east-1", "ca_bundle": ""}
# the access keys, read only when asked (keys=True: where the Secrets are written; an inventory check or an offline
# render need no Vault)
KEYS = {"access_key": "", "secret_key": ""}


class LayoutError(ValueError):
    """The inventory's object store settings contradict its layout; the message names the site and variable."""


def _coordinates(site_vars, keys):
    """One site's store coordinates (and keys) from its variables (a mapping with site_name and object_storage_*)."""
    site = site_vars.get("site_name") or ""
    if not site:
        raise LayoutError("every site needs site_name to place its object store")
    store = {"site": site}
    for field, default in ({**FIELDS, **KEYS} if keys else FIELDS).items():
        value = site_vars.get(f"object_storage_{field}", default)
        store[field] = default if value is None else str(value)
    if not store["bucket"]:
        raise LayoutError(f"site {site} has no object_storage_bucket")
    return store


def _where(store):
    return f"{store['endpoint_url'] or 'AWS S3'} bucket {store['bucket']}"


def object_stores(
    sites, layout="shared", secret_name="kms-object-store", ca_secret_name="kms-object-store-ca", keys=False
):
    """Each site's object store, in the order of ``sites``: a list of dicts with ``site``, the coordinates of
    ``FIELDS`` (with ``keys`` the access keys of ``KEYS`` too), ``secret_name`` (the Secret with its access keys) and
    ``ca_secret_name`` (the Secret with its CA, empty without a CA bundle). ``sites``: one mapping per site (its host
    variables). Raises ``LayoutError``:

    - ``shared`` with sites whose buckets differ (the per_site layout was meant, or a host variable is stray);
    - ``per_site`` with two sites on the same store (a site's own object_storage_* are missing, so it fell back to
      the group's): a data center's loss would take both sites' backups.
    """
    if layout not in LAYOUTS:
        raise LayoutError(f"object_storage_layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    stores = [_coordinates(site_vars, keys) for site_vars in sites]
    if len({store["site"] for store in stores}) != len(stores):
        raise LayoutError("two sites have the same site_name")
    if layout == "shared":
        # One store may be reached at another address from each site (the endpoint, and with it region or CA, may
        # differ); its bucket is one: each site's archive is a path in it, which the other site's replica reads.
        first = stores[0] if stores else None
        for store in stores[1:]:
            if store["bucket"] != first["bucket"]:
                raise LayoutError(
                    f"object_storage_layout is shared (one store for all sites), but site {store['site']}'s "
                    f"object_storage_bucket {store['bucket']!r} differs from site {first['site']}'s "
                    f"{first['bucket']!r}; set object_storage_layout: per_site for one store per data center, or "
                    "remove the site's own value"
                )
        for store in stores:
            store["secret_name"] = secret_name
            store["ca_secret_name"] = ca_secret_name if store["ca_bundle"] else ""
        return stores
    seen = {}
    for store in stores:
        place = (store["endpoint_url"], store["bucket"])
        if place in seen:
            raise LayoutError(
                f"object_storage_layout is per_site, but sites {seen[place]} and {store['site']} use the same store "
                f"({_where(store)}); set each site's own object_storage_endpoint_url and object_storage_bucket (and "
                "keys, region, CA) in its host variables"
            )
        seen[place] = store["site"]
        store["secret_name"] = f"{secret_name}-{store['site']}"
        store["ca_secret_name"] = f"{ca_secret_name}-{store['site']}" if store["ca_bundle"] else ""
    return stores


def store_of(stores, site):
    """The store of ``site`` in the result of ``object_stores``; raises ``LayoutError`` if it has none."""
    for store in stores:
        if store["site"] == site:
            return store
    raise LayoutError(f"no object store for site {site!r} (sites: {', '.join(s['site'] for s in stores)})")


def describe(store):
    """One line naming a store for reports: ``<site>'s store <endpoint> bucket <bucket>``."""
    return f"{store['site']}'s store {_where(store)}"
