/**
 * The Nebula certificate library: codecs for v1 (protobuf) and v2 (ASN.1), PEM and keys, signing
 * and verification with CA constraints, and encrypted CA keys. Runtime-agnostic: WebCrypto,
 * protobufjs/minimal and @noble, plus node:crypto where the runtime has it (found at run time, see
 * native.ts). Everything it refuses is a CertError with a stable code.
 */
export {
  certificateToPrintJson,
  decodeCertificate,
  encodeCertificate,
} from "./certificate.ts";
export {
  type Argon2Params,
  DEFAULT_ARGON2,
  type DecryptOptions,
  decryptPrivateKeyPem,
  encryptPrivateKeyPem,
  isEncryptedPrivateKeyPem,
} from "./encrypted-key.ts";
export { apiCodeOf, CertError, type CertErrorCode, isCertError } from "./errors.ts";
export {
  type Cidr,
  cidrContains,
  cidrContainsIp,
  compareCidr,
  formatCidr,
  formatIp,
  type IpAddress,
  type IpFamily,
  networkOf,
  parseCidr,
  parseIp,
} from "./ip.ts";
export {
  checkPublicKey,
  generateCaKeyPair,
  generateHostKeyPair,
  type KeyPair,
  parsePrivateKeyPem,
  parsePublicKeyPem,
  privateKeyToPem,
  publicKeyToPem,
} from "./keys.ts";
export { certificatesToPrintJson, certificateToPem, parseCertificatesPem } from "./pem.ts";
export { signCertificate } from "./sign.ts";
export {
  type CaSigner,
  nobleSignerFromPrivateKey,
  type SignMessage,
  signerFromPrivateKey,
  webCryptoSignerFromPrivateKey,
} from "./signer.ts";
export type { CertificateDetails, CertVersion, Curve, NebulaCertificate } from "./types.ts";
export { CaPool, type VerifyOptions, verifySignature } from "./verify.ts";
