/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: '<rootDir>/test/helpers/environment.js',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  // Builds the real-model fixtures (tools/model/fixtures.py) before the first test file.
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  testTimeout: 60000,
};
