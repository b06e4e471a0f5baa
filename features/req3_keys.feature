@pci-req-3
Feature: PCI DSS 3.6 and 3.7 — cryptographic keys are protected and managed
  Data-encryption keys exist outside the HSM only wrapped by a key-encryption key that never
  leaves it. A key custodian rotates and retires key-encryption keys through the node's admin
  endpoint (`paymentd keys rotate`, `paymentd keys set-state`), and a sealed node needs the
  master key rebuilt from custodian shares (`paymentd unseal`) before it handles any card.

  @pci-3.6.1 @needs-db
  Scenario: Data-encryption keys are stored only wrapped by a key-encryption key
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    Then every data-encryption key is stored only wrapped by a key-encryption key
    And no stored record contains the card number

  @pci-3.7.4 @pci-3.6.1 @needs-db @needs-admin @needs-own-database
  Scenario: The key-encryption key is rotated while cards stay readable
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    When the key custodian rotates the key-encryption key
    Then every data-encryption key is wrapped by the new key-encryption key version
    When the merchant charges 1000 USD to the card
    Then the payment succeeds

  @pci-3.7.5 @needs-db @needs-admin @needs-own-database
  Scenario: A retired key-encryption key no longer protects any record
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    When the key custodian rotates the key-encryption key
    And the key custodian retires the previous key-encryption key
    Then no data-encryption key is wrapped by a retired key-encryption key
    When the merchant charges 1000 USD to the card
    Then the payment succeeds

  @pci-3.7.6 @needs-unseal-shares
  Scenario: Card operations need the master key reconstructed from custodian shares
    Given a sealed payment system with 3 key custodians and a threshold of 2
    When 1 custodian enters a share
    Then card operations are refused while sealed
    When a second custodian enters a share
    Then card operations are accepted
