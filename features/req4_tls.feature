@pci-req-4
Feature: PCI DSS 4.2.1 — strong cryptography protects card data in transit
  The public listener speaks TLS 1.2 and 1.3 only, with forward-secret AEAD cipher suites.

  Background:
    Given the public TLS listener

  @pci-4.2.1
  Scenario Outline: Obsolete protocol versions are refused
    When a client offers only <protocol>
    Then the listener refuses the handshake

    Examples:
      | protocol |
      | SSL 3.0  |
      | TLS 1.0  |
      | TLS 1.1  |

  @pci-4.2.1
  Scenario Outline: Weak cipher suites are refused
    When a client offers TLS 1.2 with only the cipher suite <suite>
    Then the listener refuses the handshake

    Examples:
      | suite                                 |
      | TLS_RSA_WITH_NULL_SHA                 |
      | TLS_RSA_EXPORT_WITH_RC4_40_MD5        |
      | TLS_RSA_WITH_RC4_128_SHA              |
      | TLS_RSA_WITH_DES_CBC_SHA              |
      | TLS_RSA_WITH_3DES_EDE_CBC_SHA         |
      | TLS_DH_anon_WITH_3DES_EDE_CBC_SHA     |
      | TLS_RSA_WITH_AES_128_CBC_SHA          |
      | TLS_RSA_WITH_AES_256_CBC_SHA          |
      | TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA   |
      | TLS_ECDHE_ECDSA_WITH_RC4_128_SHA      |

  @pci-4.2.1
  Scenario: TLS 1.2 and 1.3 with strong suites are accepted
    When a client offers TLS 1.2 with forward-secret AEAD cipher suites
    Then the listener accepts the handshake
    And a full TLS 1.2 handshake succeeds
    And a full TLS 1.3 handshake succeeds
