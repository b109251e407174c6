"""When the station's network counts as "back" (pure logic; the watcher reads the system)."""

from __future__ import annotations

from node_firmware.core.network import NetworkSnapshot, network_returned

UP = NetworkSnapshot(
    links_up=frozenset({"wwan0"}),
    addresses=frozenset({"wwan0/10.64.3.7"}),
    default_routes=frozenset({"wwan0/00000000"}),
    route_to_broker="10.64.3.7",
)
CUT = NetworkSnapshot(
    links_up=frozenset(),
    addresses=frozenset(),
    default_routes=frozenset(),
    route_to_broker="10.64.3.7",  # a route through a link without carrier still resolves
)


def test_a_link_getting_its_carrier_back_is_a_return() -> None:
    assert network_returned(CUT, UP) == "link up: wwan0"


def test_losing_the_network_or_nothing_changing_is_not() -> None:
    assert network_returned(UP, CUT) is None
    assert network_returned(UP, UP) is None
    assert network_returned(CUT, CUT) is None


def test_a_new_address_or_default_route_on_a_live_link_is_a_return() -> None:
    # The modem reattached with a new address (the carrier never dropped).
    readdressed = NetworkSnapshot(
        links_up=UP.links_up,
        addresses=frozenset({"wwan0/10.64.9.1"}),
        default_routes=UP.default_routes,
        route_to_broker="10.64.9.1",
    )
    assert network_returned(UP, readdressed) == "new address: wwan0/10.64.9.1"
    no_route = NetworkSnapshot(links_up=UP.links_up, addresses=UP.addresses)
    assert network_returned(no_route, UP) == "new default route: wwan0/00000000"


def test_a_route_to_the_broker_appearing_is_a_return() -> None:
    unreachable = NetworkSnapshot(links_up=UP.links_up, addresses=UP.addresses)
    reachable = NetworkSnapshot(
        links_up=UP.links_up, addresses=UP.addresses, route_to_broker="10.64.3.7"
    )
    assert network_returned(unreachable, reachable) == "route to the broker from 10.64.3.7"


def test_nothing_counts_without_a_link_that_can_carry_traffic() -> None:
    # An address configured on an interface with no carrier reaches nobody.
    assert network_returned(NetworkSnapshot(), NetworkSnapshot(addresses=UP.addresses)) is None
