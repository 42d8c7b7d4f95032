CREATE TABLE `audit_events` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`id` text NOT NULL,
	`at` integer NOT NULL,
	`trace_id` text NOT NULL,
	`actor` text NOT NULL,
	`org` text NOT NULL,
	`network_id` text,
	`action` text NOT NULL,
	`outcome` text NOT NULL,
	`region` text,
	`key_id` text,
	`kms_request_ids` text NOT NULL,
	`cert_fingerprint` text,
	`detail` text NOT NULL,
	`prev_hash` text NOT NULL,
	`hash` text NOT NULL,
	CONSTRAINT "audit_outcome" CHECK("audit_events"."outcome" in ('ok', 'denied', 'error'))
);
--> statement-breakpoint
CREATE UNIQUE INDEX `audit_events_id_unique` ON `audit_events` (`id`);--> statement-breakpoint
CREATE INDEX `audit_org_at` ON `audit_events` (`org`,`at`);--> statement-breakpoint
CREATE INDEX `audit_trace` ON `audit_events` (`trace_id`);--> statement-breakpoint
CREATE INDEX `audit_network_at` ON `audit_events` (`network_id`,`at`);--> statement-breakpoint
CREATE TABLE `ca_sealed_keys` (
	`ca_id` text NOT NULL,
	`region` text NOT NULL,
	`key_id` text NOT NULL,
	`ciphertext` blob NOT NULL,
	PRIMARY KEY(`ca_id`, `region`),
	FOREIGN KEY (`ca_id`) REFERENCES `cas`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE TABLE `cas` (
	`id` text PRIMARY KEY NOT NULL,
	`network_id` text NOT NULL,
	`org` text NOT NULL,
	`certificate` text NOT NULL,
	`fingerprint` text NOT NULL,
	`not_before` integer NOT NULL,
	`not_after` integer NOT NULL,
	`state` text NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	FOREIGN KEY (`network_id`) REFERENCES `networks`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "cas_state" CHECK("cas"."state" in ('active', 'previous', 'retired'))
);
--> statement-breakpoint
CREATE UNIQUE INDEX `cas_fingerprint_unique` ON `cas` (`fingerprint`);--> statement-breakpoint
CREATE INDEX `cas_network` ON `cas` (`network_id`);--> statement-breakpoint
CREATE UNIQUE INDEX `cas_one_active` ON `cas` (`network_id`) WHERE state = 'active';--> statement-breakpoint
CREATE TABLE `certificates` (
	`fingerprint` text PRIMARY KEY NOT NULL,
	`host_id` text,
	`network_id` text NOT NULL,
	`ca_id` text NOT NULL,
	`pem` text NOT NULL,
	`not_before` integer NOT NULL,
	`not_after` integer NOT NULL,
	`revoked_at` integer,
	`idempotency_key` text,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`network_id`) REFERENCES `networks`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`ca_id`) REFERENCES `cas`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `certificates_idempotency_key_unique` ON `certificates` (`idempotency_key`);--> statement-breakpoint
CREATE INDEX `certificates_host` ON `certificates` (`host_id`);--> statement-breakpoint
CREATE INDEX `certificates_network_revoked` ON `certificates` (`network_id`,`revoked_at`);--> statement-breakpoint
CREATE TABLE `enrollment_codes` (
	`hash` text PRIMARY KEY NOT NULL,
	`host_id` text NOT NULL,
	`expires_at` integer NOT NULL,
	`used_at` integer,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `enrollment_codes_host` ON `enrollment_codes` (`host_id`);--> statement-breakpoint
CREATE TABLE `host_tokens` (
	`hash` text PRIMARY KEY NOT NULL,
	`host_id` text NOT NULL,
	`generation` integer NOT NULL,
	`state` text NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	FOREIGN KEY (`host_id`) REFERENCES `hosts`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "host_tokens_state" CHECK("host_tokens"."state" in ('current', 'rotated'))
);
--> statement-breakpoint
CREATE INDEX `host_tokens_host` ON `host_tokens` (`host_id`);--> statement-breakpoint
CREATE UNIQUE INDEX `host_tokens_one_current` ON `host_tokens` (`host_id`) WHERE state = 'current';--> statement-breakpoint
CREATE TABLE `hosts` (
	`id` text PRIMARY KEY NOT NULL,
	`network_id` text NOT NULL,
	`name` text NOT NULL,
	`ip` text NOT NULL,
	`groups` text NOT NULL,
	`lighthouse` integer NOT NULL,
	`static_addrs` text NOT NULL,
	`state` text NOT NULL,
	`cert_lifetime_s` integer NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	FOREIGN KEY (`network_id`) REFERENCES `networks`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "hosts_state" CHECK("hosts"."state" in ('pending', 'enrolled', 'blocked'))
);
--> statement-breakpoint
CREATE UNIQUE INDEX `hosts_network_name` ON `hosts` (`network_id`,`name`);--> statement-breakpoint
CREATE UNIQUE INDEX `hosts_network_ip` ON `hosts` (`network_id`,`ip`);--> statement-breakpoint
CREATE TABLE `idempotency` (
	`org` text NOT NULL,
	`key` text NOT NULL,
	`request_hash` text NOT NULL,
	`response` text NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	PRIMARY KEY(`org`, `key`)
);
--> statement-breakpoint
CREATE TABLE `networks` (
	`id` text PRIMARY KEY NOT NULL,
	`org` text NOT NULL,
	`name` text NOT NULL,
	`cidrs` text NOT NULL,
	`curve` text NOT NULL,
	`cert_version` integer NOT NULL,
	`groups` text,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	CONSTRAINT "networks_curve" CHECK("networks"."curve" in ('25519', 'P256')),
	CONSTRAINT "networks_cert_version" CHECK("networks"."cert_version" in (1, 2))
);
--> statement-breakpoint
CREATE UNIQUE INDEX `networks_org_name` ON `networks` (`org`,`name`);