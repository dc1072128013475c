"""A proxy auto-config (PAC) file for the status API's `GET /proxy.pac`: browsers and
systems that take a PAC URL send the services' destinations through detour and everything
else direct, so only what needs a detour takes one.

Matching follows ServiceTable.match: a host that is one of a service's domains or under one,
an IP literal inside one of its CIDRs, and the service's ports when it names any. The file
uses plain JavaScript only -- no dnsResolve(), isInNet() or other PAC helpers: a name is never
resolved just to pick a proxy (the network's DNS may be the censor, and a lookup per request
is slow), and the same file runs in every PAC engine.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

from transports.wire import format_hostport

from .services import Service

__all__ = ["proxy_pac"]

_TEMPLATE = """\
// detour proxy auto-config: the services' destinations through detour, the rest direct.
var DETOUR = @PROXY@;
var SERVICES = @SERVICES@;

function detourPort(url) {
  var colon = url.indexOf(":");
  if (colon < 0) return -1;
  var scheme = url.substring(0, colon).toLowerCase();
  var rest = url.substring(colon + 1);
  if (rest.substring(0, 2) === "//") rest = rest.substring(2);
  var end = rest.search(/[\\/?#]/);
  var authority = end < 0 ? rest : rest.substring(0, end);
  authority = authority.substring(authority.lastIndexOf("@") + 1);
  var port = "";
  if (authority.charAt(0) === "[") {
    var close = authority.indexOf("]");
    if (authority.charAt(close + 1) === ":") port = authority.substring(close + 2);
  } else if (authority.indexOf(":") >= 0) {
    port = authority.substring(authority.indexOf(":") + 1);
  }
  if (/^[0-9]{1,5}$/.test(port)) return parseInt(port, 10);
  var known = {http: 80, ws: 80, https: 443, wss: 443, ftp: 21};
  return known.hasOwnProperty(scheme) ? known[scheme] : -1;
}

function detourIPv4(text) {
  var parts = text.split(".");
  if (parts.length !== 4) return null;
  var value = 0;
  for (var i = 0; i < 4; i++) {
    if (!/^[0-9]{1,3}$/.test(parts[i])) return null;
    var n = parseInt(parts[i], 10);
    if (n > 255) return null;
    value = value * 256 + n;
  }
  return value;
}

function detourIPv6(text) {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || text.indexOf(":") < 0) return null;
  var halves = text.split("::");
  if (halves.length > 2) return null;
  function groups(part) {
    if (part === "") return [];
    var out = [], items = part.split(":");
    for (var i = 0; i < items.length; i++) {
      if (i === items.length - 1 && items[i].indexOf(".") >= 0) {
        var v4 = detourIPv4(items[i]);
        if (v4 === null) return null;
        out.push(Math.floor(v4 / 65536), v4 % 65536);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(items[i])) {
        out.push(parseInt(items[i], 16));
      } else {
        return null;
      }
    }
    return out;
  }
  var head = groups(halves[0]);
  var tail = halves.length === 2 ? groups(halves[1]) : [];
  if (head === null || tail === null) return null;
  var missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  var all = head;
  for (var j = 0; j < missing; j++) all.push(0);
  return all.concat(tail);
}

function detourInV4(ip, nets) {
  for (var i = 0; i < nets.length; i++) {
    var size = Math.pow(2, 32 - nets[i][1]);
    if (Math.floor(ip / size) === Math.floor(nets[i][0] / size)) return true;
  }
  return false;
}

function detourInV6(ip, nets) {
  for (var i = 0; i < nets.length; i++) {
    var net = nets[i][0], bits = nets[i][1], same = true;
    for (var g = 0; g < 8 && bits > 0 && same; g++, bits -= 16) {
      var size = Math.pow(2, 16 - Math.min(bits, 16));
      same = Math.floor(ip[g] / size) === Math.floor(net[g] / size);
    }
    if (same) return true;
  }
  return false;
}

function detourService(url, host) {
  host = host.toLowerCase();
  if (host.charAt(0) === "[") host = host.substring(1, host.length - 1);
  host = host.split("%")[0];
  while (host.charAt(host.length - 1) === ".") host = host.substring(0, host.length - 1);
  var v4 = detourIPv4(host), v6 = v4 === null ? detourIPv6(host) : null;
  if (v6 !== null && v6[0] === 0 && v6[1] === 0 && v6[2] === 0 && v6[3] === 0 &&
      v6[4] === 0 && v6[5] === 65535) {
    v4 = v6[6] * 65536 + v6[7];
    v6 = null;
  }
  var port = detourPort(url);
  for (var i = 0; i < SERVICES.length; i++) {
    var s = SERVICES[i];
    if (s.ports.length && s.ports.indexOf(port) < 0) continue;
    if (v4 !== null) {
      if (detourInV4(v4, s.v4)) return s.name;
    } else if (v6 !== null) {
      if (detourInV6(v6, s.v6)) return s.name;
    } else {
      for (var d = 0; d < s.domains.length; d++) {
        var domain = s.domains[d];
        if (host === domain ||
            (host.length > domain.length &&
             host.substring(host.length - domain.length - 1) === "." + domain)) {
          return s.name;
        }
      }
    }
  }
  return null;
}

function FindProxyForURL(url, host) {
  return detourService(url, host) === null ? "DIRECT" : DETOUR;
}
"""


def proxy_pac(services: Sequence[Service], host: str, port: int) -> str:
    """The PAC file sending `services` to detour's mixed listener at host:port."""
    address = format_hostport(host, port)
    table = []
    for service in services:
        v4, v6 = [], []
        for net in service.cidrs:
            if isinstance(net, ipaddress.IPv4Network):
                v4.append([int(net.network_address), net.prefixlen])
            else:
                packed = net.network_address.packed
                groups = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
                v6.append([groups, net.prefixlen])
        table.append(
            {
                "name": service.name,
                "domains": list(service.domains),
                "v4": v4,
                "v6": v6,
                "ports": sorted(service.ports),
            }
        )
    # json.dumps yields valid JavaScript literals; "</" cannot end a script it is pasted in.
    services_js = ("[\n  " + ",\n  ".join(json.dumps(entry) for entry in table) + "\n]").replace(
        "</", "<\\/"
    )
    proxy_js = json.dumps(f"SOCKS5 {address}; SOCKS {address}")
    return _TEMPLATE.replace("@PROXY@", proxy_js).replace("@SERVICES@", services_js)
