CREATE TABLE `address_pools` (
	`network_id` text NOT NULL,
	`cidr` text NOT NULL,
	`next_key` text NOT NULL,
	PRIMARY KEY(`network_id`, `cidr`),
	FOREIGN KEY (`network_id`) REFERENCES `networks`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE TABLE `host_addresses` (
	`network_id` text NOT NULL,
	`host_id` text NOT NULL,
	`address` text NOT NULL,
	`key` text NOT NULL,
	`position` integer NOT NULL,
	PRIMARY KEY(`network_id`, `key`),
	FOREIGN KEY (`network_id`) REFERENCES `networks`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `host_addresses_host` ON `host_addresses` (`host_id`,`position`);--> statement-breakpoint
CREATE INDEX `hosts_network_lighthouses` ON `hosts` (`network_id`) WHERE lighthouse = 1;--> statement-breakpoint
-- Backfill: each existing host's one address (hosts.ip) becomes its first host_addresses row. The key
-- is the address as fixed-width hex behind its family, computed here as signer/store/addresses.ts
-- does: IPv4 octets as two hex digits each; IPv6 with "::" expanded and every group padded to four.
WITH RECURSIVE
bare AS (
	SELECT id, network_id, ip,
		lower(CASE WHEN instr(ip, '/') > 0 THEN substr(ip, 1, instr(ip, '/') - 1) ELSE ip END) AS addr
	FROM hosts
),
halves AS (
	SELECT id, network_id, ip, addr,
		CASE WHEN instr(addr, '::') > 0 THEN substr(addr, 1, instr(addr, '::') - 1) END AS l,
		CASE WHEN instr(addr, '::') > 0 THEN substr(addr, instr(addr, '::') + 2) END AS r
	FROM bare
),
expanded AS (
	SELECT id, network_id, ip,
		CASE WHEN instr(addr, ':') = 0 THEN '4' ELSE '6' END AS family,
		CASE
			WHEN instr(addr, ':') = 0 THEN addr || '.'
			WHEN l IS NULL THEN addr || ':'
			ELSE l || CASE WHEN l <> '' THEN ':' ELSE '' END
				|| substr('0:0:0:0:0:0:0:0', 1, 2 * (8
					- CASE WHEN l = '' THEN 0 ELSE length(l) - length(replace(l, ':', '')) + 1 END
					- CASE WHEN r = '' THEN 0 ELSE length(r) - length(replace(r, ':', '')) + 1 END) - 1)
				|| CASE WHEN r <> '' THEN ':' ELSE '' END || r || ':'
		END AS rest
	FROM halves
),
digits(id, network_id, ip, family, rest, hex) AS (
	SELECT id, network_id, ip, family, rest, '' FROM expanded
	UNION ALL
	SELECT id, network_id, ip, family,
		substr(rest, instr(rest, CASE family WHEN '4' THEN '.' ELSE ':' END) + 1),
		hex || CASE family
			WHEN '4' THEN printf('%02x', CAST(substr(rest, 1, instr(rest, '.') - 1) AS integer))
			ELSE substr('0000' || substr(rest, 1, instr(rest, ':') - 1), -4, 4)
		END
	FROM digits
	WHERE rest <> ''
)
INSERT INTO `host_addresses` (`network_id`, `host_id`, `address`, `key`, `position`)
SELECT network_id, id, ip, family || hex, 0 FROM digits WHERE rest = '';
