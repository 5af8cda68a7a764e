"""The object store layout (module_utils/object_stores.py): which store each site's backups go to."""

from __future__ import annotations

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import object_stores as layout


def site(name, **stores):
    values = {
        "site_name": name,
        "object_storage_endpoint_url": "https://s3.example.net",
        "object_storage_bucket": "kms-backups",
        "object_storage_access_key": "AK",
        "object_storage_secret_key": "SK",
    }
    values.update({f"object_storage_{k}": v for k, v in stores.items()})
    return values


def test_shared_layout_keeps_todays_secret_names():
    stores = layout.object_stores([site("dc1", ca_bundle="/ca.pem"), site("dc2", ca_bundle="/ca.pem")])
    assert [s["site"] for s in stores] == ["dc1", "dc2"]
    assert {s["secret_name"] for s in stores} == {"kms-object-store"}
    assert {s["ca_secret_name"] for s in stores} == {"kms-object-store-ca"}
    assert stores[0]["region"] == "us-east-1" and stores[0]["endpoint_url"] == "https://s3.example.net"
    assert "access_key" not in stores[0], "the keys only when asked (no Vault for a check or a render)"


def test_shared_layout_without_ca_has_no_ca_secret():
    stores = layout.object_stores([site("dc1"), site("dc2")], "shared", "s", "c")
    assert [(s["secret_name"], s["ca_secret_name"]) for s in stores] == [("s", ""), ("s", "")]


def test_shared_layout_refuses_sites_with_different_buckets():
    with pytest.raises(layout.LayoutError, match=r"site dc2's object_storage_bucket 'b2' differs from site dc1's"):
        layout.object_stores([site("dc1"), site("dc2", endpoint_url="https://s3.dc2", bucket="b2")])


def test_shared_layout_accepts_one_store_reached_at_an_address_per_site():
    stores = layout.object_stores(
        [site("dc1", endpoint_url="https://10.0.1.1"), site("dc2", endpoint_url="https://10.0.2.1")]
    )
    assert [(s["endpoint_url"], s["secret_name"]) for s in stores] == [
        ("https://10.0.1.1", "kms-object-store"),
        ("https://10.0.2.1", "kms-object-store"),
    ]


def test_per_site_layout_names_a_secret_per_store():
    stores = layout.object_stores(
        [
            site("dc1", endpoint_url="https://s3.dc1", ca_bundle="/dc1.pem"),
            site("dc2", endpoint_url="https://s3.dc2", access_key="AK2"),
        ],
        "per_site",
        keys=True,
    )
    assert [(s["site"], s["endpoint_url"], s["secret_name"], s["ca_secret_name"]) for s in stores] == [
        ("dc1", "https://s3.dc1", "kms-object-store-dc1", "kms-object-store-ca-dc1"),
        ("dc2", "https://s3.dc2", "kms-object-store-dc2", ""),
    ]
    assert stores[1]["access_key"] == "AK2"
    assert layout.store_of(stores, "dc2") is stores[1]
    assert layout.describe(stores[0]) == "dc1's store https://s3.dc1 bucket kms-backups"


def test_per_site_layout_accepts_one_endpoint_with_a_bucket_per_site():
    stores = layout.object_stores([site("dc1", bucket="b1"), site("dc2", bucket="b2")], "per_site")
    assert [s["bucket"] for s in stores] == ["b1", "b2"]


def test_per_site_layout_refuses_a_site_without_its_own_store():
    with pytest.raises(layout.LayoutError, match=r"sites dc1 and dc2 use the same store \(https://s3.example.net"):
        layout.object_stores([site("dc1"), site("dc2")], "per_site")


@pytest.mark.parametrize(
    ("sites", "mode", "message"),
    [
        ([site("dc1")], "both", "object_storage_layout must be one of shared, per_site"),
        ([site("dc1", bucket="")], "shared", "site dc1 has no object_storage_bucket"),
        ([{"object_storage_bucket": "b"}], "shared", "every site needs site_name"),
        ([site("dc1"), site("dc1", bucket="b2")], "per_site", "two sites have the same site_name"),
    ],
)
def test_bad_settings_are_named(sites, mode, message):
    with pytest.raises(layout.LayoutError, match=message):
        layout.object_stores(sites, mode)


def test_store_of_an_unknown_site():
    with pytest.raises(layout.LayoutError, match="no object store for site 'dc3'"):
        layout.store_of(layout.object_stores([site("dc1")]), "dc3")


def test_the_filter_names_the_problem():
    from ansible.errors import AnsibleFilterError

    from ansible_collections.hanzo.kms.plugins.filter.object_stores import FilterModule

    fn = FilterModule().filters()["object_stores"]
    assert fn([site("dc1", bucket="b1"), site("dc2", bucket="b2")], "per_site")[1]["secret_name"] == (
        "kms-object-store-dc2"
    )
    with pytest.raises(AnsibleFilterError, match="object storage: object_storage_layout is per_site, but sites dc1"):
        fn([site("dc1"), site("dc2")], "per_site")
    with pytest.raises(AnsibleFilterError, match="needs a list of the sites' variables"):
        fn("dc1")
