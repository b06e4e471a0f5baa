@pci-req-7
Feature: PCI DSS 7.2 — access is limited to least privilege
  A publishable key can only tokenize cards in a browser. Inside the system, only the payment
  service may have the tokenizer decrypt a card (vault-and-forward); the public API service,
  which faces the internet, cannot.

  @pci-7.2.2
  Scenario: A publishable key cannot charge cards or read payments
    Given a merchant with a secret key
    Then the publishable key cannot create a payment
    And the publishable key can still tokenize a card in the browser

  @pci-7.2.1 @pci-7.2.2 @embedded-only
  Scenario: Only the payment service may have the tokenizer decrypt a card
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    When the public API service asks the tokenizer to detokenize the card
    Then the tokenizer answers 403
    When an unauthenticated caller asks the tokenizer to detokenize the card
    Then the tokenizer answers 401
    When the payment service asks the tokenizer to detokenize the card
    Then the tokenizer answers 200
