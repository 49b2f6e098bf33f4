"""Static outbound IP addresses for ECS tasks (managed runs' seed feature): private subnets whose only way out is one
NAT gateway holding one Elastic IP, so every task leaves from that one address users can allow in their firewalls.

Provisioned with the rest of a pool's ECS infrastructure when asked (``EcsProvisioner(static_ips=True)``, ``pushpool
work-pool create … --type ecs:push --provision-infra --static-ips``: the pool managed runs use). Every resource carries
the pool's tag plus ``pushpool:egress``; planning finds them again (a second run creates nothing), and deprovision
removes them before the VPC: the NAT gateway first (waited for), then its address, the private subnets and their
route table. One NAT gateway, not one per zone: one address to allow, at the price of one zone's availability.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pushpool.errors import BackendError
from pushpool.providers.provisioning import CREATE, DELETE, EXISTS, Step

TAG_KEY = "pushpool:pool"
ROLE_KEY = "pushpool:egress"  # nat | private


class StaticEgress:
    """The egress of one pool's tasks: plan (read-only), apply through the steps' ``run``, deprovision."""

    def __init__(self, ec2: Any, pool: str, tags: list[dict[str, str]], *, wait_timeout: float = 300) -> None:
        self.ec2, self.pool, self.tags, self.wait_timeout = ec2, pool, tags, wait_timeout

    def _filters(self, role: str) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{TAG_KEY}", "Values": [self.pool]}, {"Name": f"tag:{ROLE_KEY}", "Values": [role]}]

    def _tag_spec(self, kind: str, role: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": [*self.tags, {"Key": ROLE_KEY, "Value": role}]}]

    # -- reads ------------------------------------------------------------------------------------------------

    def _address(self) -> dict[str, Any] | None:
        found = self.ec2.describe_addresses(Filters=self._filters("nat")).get("Addresses", [])
        return found[0] if found else None

    def _gateway(self) -> dict[str, Any] | None:
        found = self.ec2.describe_nat_gateways(
            Filters=[*self._filters("nat"), {"Name": "state", "Values": ["pending", "available"]}]
        ).get("NatGateways", [])
        return found[0] if found else None

    def _private_subnets(self) -> list[str]:
        found = self.ec2.describe_subnets(Filters=self._filters("private")).get("Subnets", [])
        return [s["SubnetId"] for s in sorted(found, key=lambda s: s["AvailabilityZone"])]

    def addresses(self) -> list[str]:
        """The static outbound addresses of the pool's tasks (empty when not provisioned)."""
        return [a["PublicIp"] for a in self.ec2.describe_addresses(Filters=self._filters("nat")).get("Addresses", [])]

    # -- plan -------------------------------------------------------------------------------------------------

    def steps(self, state: dict[str, Any]) -> list[Step]:
        """Steps after the VPC and security group steps (which fill ``state``: vpc_id, subnets, security_group)."""
        address, gateway, private = self._address(), self._gateway(), self._private_subnets()

        def run_address() -> dict[str, Any]:
            found = self._address() or self.ec2.allocate_address(
                Domain="vpc", TagSpecifications=self._tag_spec("elastic-ip", "nat")
            )
            state["allocation_id"] = found["AllocationId"]
            return {"_static_ips": [found["PublicIp"]]}

        def run_gateway() -> dict[str, Any]:
            found = self._gateway()
            if found is None:
                found = self.ec2.create_nat_gateway(
                    SubnetId=state["subnets"][0],
                    AllocationId=state["allocation_id"],
                    TagSpecifications=self._tag_spec("natgateway", "nat"),
                )["NatGateway"]
            delay = 5
            self.ec2.get_waiter("nat_gateway_available").wait(
                NatGatewayIds=[found["NatGatewayId"]],
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(self.wait_timeout / delay))},
            )
            state["nat_gateway_id"] = found["NatGatewayId"]
            return {}

        def run_private() -> dict[str, Any]:
            subnets = self._private_subnets() or self._create_private(state)
            return {
                "network_configuration": {
                    "subnets": subnets,
                    "securityGroups": [state["security_group"]],
                    "assignPublicIp": "DISABLED",
                }
            }

        name = f"pushpool-{self.pool}-egress"
        return [
            Step(
                "Elastic IP", address["PublicIp"] if address else name, EXISTS if address else CREATE, "", run_address
            ),
            Step(
                "NAT gateway",
                gateway["NatGatewayId"] if gateway else name,
                EXISTS if gateway else CREATE,
                "in the first public subnet, holding the Elastic IP",
                run_gateway,
            ),
            Step(
                "private subnets",
                ", ".join(private) if private else name,
                EXISTS if private else CREATE,
                "up to 3 zones, their only route out through the NAT gateway; the pool's tasks run there",
                run_private,
            ),
        ]

    def _create_private(self, state: dict[str, Any]) -> list[str]:
        vpc_id = state["vpc_id"]
        table = self.ec2.create_route_table(VpcId=vpc_id, TagSpecifications=self._tag_spec("route-table", "private"))[
            "RouteTable"
        ]["RouteTableId"]
        self.ec2.create_route(
            RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=state["nat_gateway_id"]
        )
        cidr = ipaddress.ip_network(self.ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"])
        used = [
            ipaddress.ip_network(s["CidrBlock"])
            for s in self.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
        ]
        free = [b for b in cidr.subnets(new_prefix=max(cidr.prefixlen, 22)) if not any(b.overlaps(u) for u in used)]
        zones = [z["ZoneName"] for z in self.ec2.describe_availability_zones()["AvailabilityZones"]][:3]
        if not free:
            raise BackendError(f"no free address block in VPC {vpc_id} for private subnets", backend="ecs")
        subnets = []
        for zone, block in zip(zones, free, strict=False):
            subnet = self.ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=str(block),
                AvailabilityZone=zone,
                TagSpecifications=self._tag_spec("subnet", "private"),
            )["Subnet"]["SubnetId"]
            self.ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
            subnets.append(subnet)
        return subnets

    # -- deprovision -------------------------------------------------------------------------------------------

    def deprovision_steps(self) -> list[Step]:
        """In order: the NAT gateway (waited for until deleted), the private subnets and route table, the address."""
        steps: list[Step] = []
        gateway = self._gateway()
        if gateway is not None:

            def delete_gateway(nat: str = gateway["NatGatewayId"]) -> dict[str, Any]:
                self.ec2.delete_nat_gateway(NatGatewayId=nat)
                self.ec2.get_waiter("nat_gateway_deleted").wait(
                    NatGatewayIds=[nat], WaiterConfig={"Delay": 5, "MaxAttempts": max(1, int(self.wait_timeout / 5))}
                )
                return {}

            steps.append(Step("NAT gateway", gateway["NatGatewayId"], DELETE, "", delete_gateway))
        private = self._private_subnets()
        tables = self.ec2.describe_route_tables(Filters=self._filters("private")).get("RouteTables", [])
        if private or tables:

            def delete_private() -> dict[str, Any]:
                for table in tables:
                    for assoc in table.get("Associations", []):
                        self.ec2.disassociate_route_table(AssociationId=assoc["RouteTableAssociationId"])
                for subnet in private:
                    self.ec2.delete_subnet(SubnetId=subnet)
                for table in tables:
                    self.ec2.delete_route_table(RouteTableId=table["RouteTableId"])
                return {}

            steps.append(Step("private subnets", ", ".join(private), DELETE, "and their route table", delete_private))
        for address in self.ec2.describe_addresses(Filters=self._filters("nat")).get("Addresses", []):
            steps.append(
                Step(
                    "Elastic IP",
                    address["PublicIp"],
                    DELETE,
                    "released",
                    lambda a=address["AllocationId"]: self.ec2.release_address(AllocationId=a) and {},
                )
            )
        return steps
